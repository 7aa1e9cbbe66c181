// mlr::Error and MLR_CHECK are defined in base/ (the layer below tensor/); tensor code and the
// layers above keep including this header.
#pragma once

#include "base/error.h"

// CPU kernels: readable, OpenMP-parallel references (tensor/kernels/cpu/*.cpp). The list, with
// each kernel's contract, is tensor/kernels/kernel_list.h (the CUDA kernels have the same one).
#pragma once

#include <optional>

#include "tensor/kernels/kernel_list.h"

namespace mlr::cpu {

MLR_DECLARE_DEVICE_KERNELS()

}  // namespace mlr::cpu

// The task API in one include: the registry (load_task, find_task; each task is one file under
// eval/tasks/) and MMLU's loader and groups.
#pragma once

#include "eval/task_registry.h"
#include "eval/tasks/mmlu.h"

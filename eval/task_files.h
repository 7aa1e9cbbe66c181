// Finding and loading tasks by name, for mlr-eval and for mlr-train's periodic evaluation. Each
// task's files are, in order of preference: NAME=PATH from `task_files` (a family such as MMLU
// takes its family's name: mmlu=DIR), or its default path under a data directory in the public
// releases' layout (TaskDefinition::default_path, e.g. boolq/val.jsonl, superglue/CB/val.jsonl,
// mmlu/, gsm8k/test.jsonl). The few-shot pool is NAME=PATH from `fewshot_files`, or a train.jsonl
// beside the scored file.
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "eval/task_registry.h"

namespace mlr::eval {

struct LoadedTasks {
  std::vector<Task> tasks;
  std::vector<TaskGroup> groups;  // the groups of the loaded tasks' definitions (MMLU's categories)
};

LoadedTasks load_named_tasks(const std::vector<std::string>& names, const std::filesystem::path& data_dir,
                             const std::map<std::string, std::string>& task_files = {},
                             const std::map<std::string, std::string>& fewshot_files = {});

}  // namespace mlr::eval

// Finding and loading tasks by name from a data directory in the public releases' layout, for
// mlr-eval and for mlr-train's periodic evaluation:
//   mmlu/{dev,test}/<subject>_<split>.csv          mmlu, or one subject as mmlu_<subject>
//   boolq/val.jsonl                                boolq
//   superglue/{CB,COPA,MultiRC,RTE,WiC,WSC}/val.jsonl   cb copa multirc sglue_rte wic wsc
//   gsm8k/test.jsonl                               gsm8k
// A train.jsonl next to the scored file is the few-shot pool. Explicit NAME -> PATH maps override
// the layout (and are the only way to name the files of arc_*, hellaswag, piqa and winogrande).
#pragma once

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "eval/tasks.h"

namespace mlr::eval {

struct LoadedTasks {
  std::vector<Task> tasks;
  std::vector<TaskGroup> groups;  // the MMLU groups of the loaded subjects
};

LoadedTasks load_named_tasks(const std::vector<std::string>& names, const std::filesystem::path& data_dir,
                             const std::map<std::string, std::string>& task_files = {},
                             const std::map<std::string, std::string>& fewshot_files = {});

}  // namespace mlr::eval

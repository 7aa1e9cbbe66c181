// MMLU as lm-evaluation-harness's mmlu/default defines it: 57 tasks mmlu_<subject> (test split,
// few-shot = dev with first_n, a description per subject, only the question .strip()ped) and the
// groups mmlu_stem, mmlu_other, mmlu_social_sciences, mmlu_humanities and mmlu over them.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "eval/task_registry.h"

namespace mlr::eval {

// The 57 subjects with their category (stem, other, social_sciences, humanities) as the harness's
// mmlu_<subject>.yaml tags them, in alphabetical order.
const std::vector<std::pair<std::string, std::string>>& mmlu_subjects();

// Loads every subject (or those named) from an MMLU root holding <split>/<subject>_<split>.csv and
// dev/<subject>_dev.csv. Each task is "mmlu_<subject>".
std::vector<Task> load_mmlu(const std::filesystem::path& root, std::string_view split = "test",
                            const std::vector<std::string>& subjects = {});

// One MMLU-format task "mmlu_<subject>" over any subject (the demo's own families): the harness's
// prompt with the subject's description, scored on `eval_file`, shots from `dev_file` (first_n).
Task load_mmlu_csv(const std::string& subject, const std::filesystem::path& eval_file,
                   const std::filesystem::path& dev_file, std::string_view split = "test",
                   const std::string& category = "other");

// The category groups and mmlu, restricted to the subjects present in `tasks` (groups left empty
// are dropped).
std::vector<TaskGroup> mmlu_groups(const std::vector<Task>& tasks);

}  // namespace mlr::eval

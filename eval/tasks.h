// The tasks of ../shared/EVAL_FORMATS.md section 6, loaded from user files in the public formats
// (MMLU hendrycks CSVs, SuperGLUE JSONL) through data/ readers, with the harness's
// doc_to_text / doc_to_choice / doc_to_target applied, quirks included:
//   mmlu_<subject>  test split; few-shot = dev, first_n; description per subject; question.strip() only
//   boolq           "?" always appended to the question
//   cb              acc + f1 (cb_multi_fi macro F1, stderr "N/A")
//   copa            premise.strip()[:-1] + " because|therefore"; choices " " + first letter lowercased,
//                   so continuations begin with two spaces
//   multirc         choices [answer + "\nIs the answer correct? yes", "... no"] with gold = label
//                   (1 = correct answer), i.e. the inverted mapping; acc per answer option. f1a and em
//                   are extras of ours (see evaluator.h), not harness metrics of this task.
//   sglue_rte       SuperGLUE RTE ("rte" is GLUE RTE in the harness and is not provided)
//   wic             the word is sentence1[start1:end1] (code points), not the "word" field
//   wsc             wsc.fixed spans; passage with the pronoun marked, detokenized
//   arc_easy, arc_challenge   test split; few-shot pool = train drawn without the n + 1 rule; acc, acc_norm
//   hellaswag       query/choices preprocessed as the harness's utils.process_docs; acc, acc_norm
//   piqa            acc, acc_norm
//   winogrande      multiple-input: one context per option, shared continuation; acc
// None has a default num_fewshot; the few-shot pools are the train split (give its file).
// GSM8K (a generation task) is in gsm8k.h.
// File formats of the extra tasks (JSONL, one object per line, Hugging Face exports):
//   arc         {question, choices: {text: [...], label: [...]}, answerKey}, or the AI2 release's
//               {question: {stem, choices: [{text, label}]}, answerKey}
//   hellaswag   {activity_label, ctx_a, ctx_b, endings: [...], label} (label an int or a digit string)
//   piqa        {goal, sol1, sol2, label}
//   winogrande  {sentence, option1, option2, answer: "1" | "2"}
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/readers.h"
#include "eval/task.h"

namespace mlr::eval {

// The SuperGLUE-family tasks by harness name.
const std::vector<std::string>& superglue_task_names();  // boolq cb copa multirc sglue_rte wic wsc

// Loads one of superglue_task_names() from the scored split's file and, optionally, the few-shot
// pool's file (the train split). Throws for unknown names (listing the known ones).
Task load_superglue_task(std::string_view name, const std::filesystem::path& eval_file,
                         const std::optional<std::filesystem::path>& fewshot_file = std::nullopt);

// ARC, HellaSwag, PIQA and Winogrande, parsed here (data/ has no readers for them).
const std::vector<std::string>& extra_task_names();  // arc_easy arc_challenge hellaswag piqa winogrande
Task load_extra_task(std::string_view name, const std::filesystem::path& eval_file,
                     const std::optional<std::filesystem::path>& fewshot_file = std::nullopt);

// Any task above but MMLU, by harness name.
Task load_task(std::string_view name, const std::filesystem::path& eval_file,
               const std::optional<std::filesystem::path>& fewshot_file = std::nullopt);

// HellaSwag's preprocess(): strip; " [title]" -> ". "; delete each "[...]" (regex \[.*?\], no newline
// inside); "  " -> " " in one pass.
std::string hellaswag_preprocess(std::string_view text);
// Python str.capitalize() for ASCII letters (non-ASCII letters are left unchanged).
std::string python_capitalize(std::string_view text);

// A Doc from a data/ Record of the task's format (exposed for tests).
Doc superglue_doc(std::string_view name, const data::Record& record);
Doc mmlu_doc(const data::Record& record);

// The 57 MMLU subjects with their category (stem, other, social_sciences, humanities) as the
// harness's mmlu_<subject>.yaml tags them, in alphabetical order.
const std::vector<std::pair<std::string, std::string>>& mmlu_subjects();

// Loads every subject (or those named) from an MMLU root holding <split>/<subject>_<split>.csv and
// dev/<subject>_dev.csv. Each task is "mmlu_<subject>".
std::vector<Task> load_mmlu(const std::filesystem::path& root, std::string_view split = "test",
                            const std::vector<std::string>& subjects = {});

// A group of tasks as the harness aggregates it (aggregate_metric_list: acc, weight_by_size).
struct TaskGroup {
  std::string name, alias;
  std::vector<std::string> children;  // direct children: task or group names
  bool weight_by_size = true;
  std::string version = "2";
};

// mmlu_stem, mmlu_other, mmlu_social_sciences, mmlu_humanities and mmlu, restricted to the subjects
// present in `tasks` (groups left empty are dropped).
std::vector<TaskGroup> mmlu_groups(const std::vector<Task>& tasks);

}  // namespace mlr::eval

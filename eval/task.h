// A task as lm-evaluation-harness defines one (lm_eval/api/task.py ConfigurableTask): documents of the
// scored split, a few-shot pool, and the functions doc_to_text / doc_to_choice / doc_to_target,
// already applied per document when the task is loaded (each task's file in eval/tasks/, found
// through task_registry.h), and its metrics. This file renders prompts and
// requests from them exactly as the harness does (../shared/EVAL_FORMATS.md sections 1 and 2):
//
//   context = description
//           + for each shot: text(shot) + target_delimiter + answer(shot) + fewshot_delimiter
//           + text(doc)
//   requests: (context, target_delimiter + choice) per choice; for multiple-input tasks
//             (winogrande) (prefix + choice_i, target_delimiter + target) per choice, where a shot
//             reads choices[gold] + target_delimiter + target.
//
// Few-shot samplers: first_n takes the pool's first n docs. The default (random) sampler is one
// Python random.Random(fewshot_seed) per task, consumed doc by doc in evaluation order; when the
// few-shot split is the scored split's "test split" (true whenever neither is set, i.e. every task
// scored on validation) it draws n + 1 with rnd.sample(pool, n + 1), drops docs equal to the eval
// doc and keeps the first n; otherwise it draws n. Docs are compared by all their fields.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval/python_random.h"
#include "eval/scorer.h"

namespace mlr::eval {

struct Doc {
  std::vector<std::pair<std::string, std::string>> fields;  // the dataset row, for equality and logging
  std::string text;                   // doc_to_text; unused by multiple-input tasks
  std::vector<std::string> choices;   // doc_to_choice; for multiple-input tasks the per-choice contexts
  int gold = -100;                    // index into choices; -100 (always wrong) when out of range
  std::string target;                 // multiple-input tasks: the continuation shared by all choices;
                                      // generation tasks: the reference answer (doc_to_target)

  bool same_row(const Doc& other) const { return fields == other.fields; }
  // The row's field, or nullptr when it has none.
  const std::string* field(std::string_view name) const;
};

// A multiple_choice doc with its results (one per choice), for metrics over a whole task.
struct ScoredDoc {
  const Doc* doc;
  const std::vector<LoglikelihoodResult>* results;
};

// The choice with the largest log-likelihood (the first maximum on ties, as numpy's argmax).
int predicted_choice(const std::vector<LoglikelihoodResult>& results);

// A metric a task reports. multiple_choice: "acc" and "acc_norm" are computed per doc by the
// evaluator and averaged (stderr mean_stderr); any other metric is a custom aggregation over all
// docs (stderr "N/A"). generate_until: score_answer gives each filtered answer's value, averaged
// per filter.
struct Metric {
  std::string name;
  std::string aggregation = "mean";                          // as the configs in the results report it
  nlohmann::json options = nlohmann::json::object();          // further metric_list fields of the configs
  std::function<double(const std::vector<ScoredDoc>&)> aggregate = nullptr;     // custom aggregation
  std::function<double(std::string_view answer, const Doc& doc)> score_answer = nullptr;  // generate_until
};

// generate_until: how an answer is extracted from the model's response (the harness's filter_list).
struct AnswerFilter {
  std::string name;
  std::function<std::string(std::string_view response)> extract;
};

enum class Sampler { random, first_n };
enum class OutputType { multiple_choice, generate_until };

struct TaskConfig {
  std::string name;      // the harness's task name, e.g. "sglue_rte", "mmlu_anatomy"
  std::string alias;     // task_alias, "" when none
  std::string tag;       // e.g. "mmlu_stem_tasks", "super-glue-lm-eval-v1"
  double version = 0.0;  // metadata.version
  std::string dataset_path, dataset_name;
  std::string training_split, validation_split, test_split, fewshot_split;  // "" = unset
  // The harness's template texts (YAML or a description of its !function), for configs in results.
  std::string doc_to_text, doc_to_choice, doc_to_target;
  std::string description;
  std::string target_delimiter = " ";
  std::string fewshot_delimiter = "\n\n";
  Sampler sampler = Sampler::random;
  bool multiple_input = false;
  OutputType output_type = OutputType::multiple_choice;
  std::vector<std::string> until;  // generate_until: stop strings (generation_kwargs.until)
  int64_t max_gen_toks = 256;
  std::vector<Metric> metrics = {Metric{.name = "acc"}};
  std::vector<AnswerFilter> filters;  // generate_until: one result per filter and metric
  int64_t default_num_fewshot = 0;

  // Scored split name (test if set, else validation).
  const std::string& eval_split() const { return test_split.empty() ? validation_split : test_split; }
  // The n + 1 rule: fewshot_split == test_split, both possibly unset.
  bool draws_extra_shot() const { return fewshot_split == test_split; }
};

struct Task {
  TaskConfig config;
  std::vector<Doc> docs;          // the scored split, in dataset order
  std::vector<Doc> fewshot_docs;  // the few-shot pool (empty: only 0-shot is possible)
};

// What one document asks of the model.
struct RenderedDoc {
  std::string context;  // the full context (for multiple-input tasks, that of the gold choice or the first)
  std::vector<LoglikelihoodRequest> requests;  // one per choice (multiple_choice)
  std::optional<GenerationRequest> generation;  // generate_until
  std::vector<size_t> shot_indices;             // pool indices of the shots, in order
};

// Renders documents in evaluation order, holding the task's few-shot RNG.
class PromptBuilder {
 public:
  PromptBuilder(const Task& task, int64_t num_fewshot, uint64_t fewshot_seed = 1234);
  // Must be called for docs in evaluation order (the random sampler's draws depend on it).
  RenderedDoc render(const Doc& doc);

 private:
  std::vector<size_t> draw_shots(const Doc& doc);
  const Task& task_;
  int64_t num_fewshot_;
  PythonRandom rnd_;
};

// The answer a shot shows: choices[gold] (doc_to_target as int) or the target (multiple-input).
std::string shot_answer(const Doc& shot);

}  // namespace mlr::eval

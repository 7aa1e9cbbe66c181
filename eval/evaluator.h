// Runs tasks against a LanguageModelScorer and aggregates as lm-evaluation-harness does
// (ConfigurableTask.process_results for multiple_choice, evaluator_utils / group aggregation),
// then writes the harness's results JSON, a human table and per-sample JSONL.
//
// Per doc: lls[i] (sum log-prob of choice i's continuation), pred = argmax (first maximum wins)
//   acc       = pred == gold                         (gold -100 always scores 0)
//   acc_norm  = argmax(lls[i] / len(choices[i])) == gold, len in code points (Python len)
// A task's other metrics are its own aggregations over all its docs (Metric::aggregate in task.h,
//   e.g. CB's f1, MultiRC's f1a and em), stderr "N/A".
// Generation tasks (gsm8k): each response goes through the task's filters; each metric
//   (Metric::score_answer) per filter, reported as "<metric>,<filter>".
// Task value = mean of per-doc values; stderr = mean_stderr. Groups (weight_by_size):
//   value = sum(m_i n_i) / sum(n_i) over leaf tasks, stderr = pooled_sample_stderr over leaves.
// For groups we add "acc_macro": the plain mean of the leaf tasks' acc (stderr sqrt(sum se_i^2)/k).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "eval/scorer.h"
#include "eval/task.h"
#include "eval/tasks.h"  // the task API (registry, loaders) that evaluate() is used with

namespace mlr::eval {

struct EvalOptions {
  std::optional<int64_t> num_fewshot;  // unset: the task's default (0 for every task here)
  std::optional<double> limit;         // >= 1: the first N docs; < 1: ceil(fraction * N)
  uint64_t fewshot_seed = 1234;        // the 4th value of the harness's --seed default
  bool log_samples = false;            // keep per-doc records for write_samples_jsonl
};

struct MetricValue {
  std::string name;               // "acc", "acc_norm", "f1", ...
  std::string filter = "none";    // the harness's filter name (key "<name>,<filter>")
  double value = 0.0;
  std::optional<double> standard_error;  // nullopt = "N/A"
  bool higher_is_better = true;
};

struct SampleRecord {
  int64_t doc_id = 0;
  Doc doc;
  std::vector<LoglikelihoodRequest> requests;
  std::vector<LoglikelihoodResult> results;
  std::vector<std::pair<std::string, double>> metrics;  // per-doc metric values (filter "none")
  // Generation tasks: the request, the raw response and, per filter, the filtered answer and its
  // metric values.
  std::optional<GenerationRequest> generation;
  std::string response;
  struct Filtered {
    std::string filter, answer;
    std::vector<std::pair<std::string, double>> metrics;
  };
  std::vector<Filtered> filtered;
};

struct TaskResult {
  std::string name, alias;
  double version = 0.0;
  int64_t num_fewshot = 0;
  int64_t n_original = 0, n_effective = 0;
  std::vector<MetricValue> metrics;
  std::vector<SampleRecord> samples;  // with log_samples
};

struct GroupResult {
  std::string name, alias, version;
  std::vector<std::string> children;
  std::optional<int64_t> num_fewshot;  // set when all leaves agree
  int64_t sample_count = 0;
  std::vector<MetricValue> metrics;
};

struct EvalResults {
  std::vector<TaskResult> tasks;
  std::vector<GroupResult> groups;
  std::vector<TaskConfig> configs;  // parallel to tasks
  std::string model_name;
  EvalOptions options;
};

// Requests of all tasks go to the scorer in one call, so it can batch and sort them.
// The results own copies of what they report (configs, logged docs).
EvalResults evaluate(const std::vector<Task>& tasks, const std::vector<TaskGroup>& groups,
                     LanguageModelScorer& scorer, const EvalOptions& options = {});

// The per-doc metric values of one multiple_choice doc (exposed for tests).
std::vector<std::pair<std::string, double>> doc_metrics(const TaskConfig& config, const Doc& doc,
                                                        const std::vector<LoglikelihoodResult>& results);

nlohmann::json results_json(const EvalResults& results);
std::string results_table(const EvalResults& results);
void write_samples_jsonl(const TaskResult& task, std::ostream& out);

}  // namespace mlr::eval

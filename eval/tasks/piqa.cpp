// PIQA (lm-evaluation-harness piqa/piqa.yaml): validation split, acc and acc_norm. Rows (JSONL):
// {goal, sol1, sol2, label}.
#include "eval/task_docs.h"
#include "eval/task_registry.h"

namespace mlr::eval {
namespace {

DocValues piqa_values(const nlohmann::json& row) {
  return {{"goal", json_text(row, "goal")},
          {"sol1", json_text(row, "sol1")},
          {"sol2", json_text(row, "sol2")},
          {"label", json_int_label(row, "label")}};
}

TaskDefinition piqa() {
  TaskConfig c;
  c.name = "piqa";
  c.version = 1.0;
  c.dataset_path = "baber/piqa";
  c.training_split = "train";
  c.validation_split = "validation";
  c.doc_to_text = "Question: {{goal}}\nAnswer:";
  c.doc_to_target = "label";
  c.doc_to_choice = "{{[sol1, sol2]}}";
  c.metrics = {Metric{.name = "acc"}, Metric{.name = "acc_norm"}};
  return jsonl_task(std::move(c), piqa_values);
}

const TaskRegistration registration{piqa()};

}  // namespace
}  // namespace mlr::eval

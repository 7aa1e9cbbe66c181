// HellaSwag (lm-evaluation-harness hellaswag/hellaswag.yaml): validation split, acc and acc_norm;
// query and choices made by utils.process_docs. Rows (JSONL):
// {activity_label, ctx_a, ctx_b, endings: [...], label} (label an int or a digit string).
#include "eval/tasks/hellaswag.h"

#include "data/text.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"

namespace mlr::eval {

std::string python_capitalize(std::string_view text) {
  std::string out(text);
  for (size_t i = 0; i < out.size(); ++i) {
    char& c = out[i];
    if (i == 0 && c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    else if (i > 0 && c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string hellaswag_preprocess(std::string_view text) {
  std::string s = data::replace_all(data::strip(text), " [title]", ". ");
  // re.sub(r"\[.*?\]", "", s): "." does not match a newline, so a "[" whose next "]" comes after a
  // newline (or that has none) is kept and the scan resumes after it.
  std::string removed;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '[') {
      const size_t close = s.find(']', i + 1);
      const size_t newline = s.find('\n', i + 1);
      if (close != std::string::npos && (newline == std::string::npos || newline > close)) {
        i = close + 1;
        continue;
      }
    }
    removed += s[i++];
  }
  return data::replace_all(removed, "  ", " ");
}

namespace {

// utils.process_docs: the doc the templates below read.
DocValues hellaswag_values(const nlohmann::json& row) {
  const std::string ctx = json_text(row, "ctx_a") + " " + python_capitalize(json_text(row, "ctx_b"));
  Value::List choices;
  for (const auto& ending : json_texts(json_member(row, "endings"), "endings")) {
    choices.emplace_back(hellaswag_preprocess(ending));
  }
  return {{"query", hellaswag_preprocess(json_text(row, "activity_label") + ": " + ctx)},
          {"choices", std::move(choices)},
          {"label", json_int_label(row, "label")}};
}

TaskDefinition hellaswag() {
  TaskConfig c;
  c.name = "hellaswag";
  c.version = 1.0;
  c.tag = "multiple_choice";
  c.dataset_path = "Rowan/hellaswag";
  c.training_split = "train";
  c.validation_split = "validation";
  c.doc_to_text = "{{query}}";
  c.doc_to_target = "{{label}}";
  c.doc_to_choice = "choices";
  c.metrics = {Metric{.name = "acc"}, Metric{.name = "acc_norm"}};
  return jsonl_task(std::move(c), hellaswag_values);
}

const TaskRegistration registration{hellaswag()};

}  // namespace
}  // namespace mlr::eval

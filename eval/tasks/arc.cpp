// ARC-Easy and ARC-Challenge (lm-evaluation-harness arc/arc_easy.yaml, arc_challenge.yaml): the
// test split, few-shot pool = train drawn without the n + 1 rule; acc and acc_norm. Rows (JSONL) in
// the Hugging Face layout {question, choices: {text, label}, answerKey} or the AI2 release's
// {question: {stem, choices: [{text, label}]}, answerKey}.
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "tensor/error.h"

namespace mlr::eval {
namespace {

using json = nlohmann::json;

// Either layout as the Hugging Face doc.
DocValues arc_values(const json& row) {
  Value::List texts, labels;
  std::string question;
  const json& q = json_member(row, "question");
  if (q.is_object()) {
    question = json_text(q, "stem");
    const json& choices = json_member(q, "choices");
    MLR_CHECK(choices.is_array(), "field \"question.choices\" is not an array");
    for (const auto& c : choices) {
      texts.emplace_back(json_text(c, "text"));
      labels.emplace_back(json_text(c, "label"));
    }
  } else {
    question = json_text(row, "question");
    const json& choices = json_member(row, "choices");
    for (auto& t : json_texts(json_member(choices, "text"), "choices.text")) texts.emplace_back(std::move(t));
    for (auto& l : json_texts(json_member(choices, "label"), "choices.label")) labels.emplace_back(std::move(l));
    MLR_CHECK(labels.size() == texts.size(), "{} choice labels for {} choice texts", labels.size(), texts.size());
  }
  return {{"question", question},
          {"choices", Value::Object{{"text", texts}, {"label", labels}}},
          {"answerKey", json_text(row, "answerKey")}};
}

TaskDefinition arc(const std::string& name, const std::string& dataset_name) {
  TaskConfig c;
  c.name = name;
  c.version = 1.0;
  c.tag = "ai2_arc";
  c.dataset_path = "allenai/ai2_arc";
  c.dataset_name = dataset_name;
  c.training_split = "train";
  c.validation_split = "validation";
  c.test_split = "test";
  c.doc_to_text = "Question: {{question}}\nAnswer:";
  c.doc_to_target = "{{choices.label.index(answerKey)}}";
  c.doc_to_choice = "{{choices.text}}";
  c.metrics = {Metric{.name = "acc"}, Metric{.name = "acc_norm"}};
  return jsonl_task(std::move(c), arc_values);
}

const TaskRegistration easy{arc("arc_easy", "ARC-Easy")};
const TaskRegistration challenge{arc("arc_challenge", "ARC-Challenge")};

}  // namespace
}  // namespace mlr::eval

// Winogrande (lm-evaluation-harness winogrande/default.yaml, preprocess_winogrande.py): a
// multiple-input task. Each option fills the blank to make one context (the sentence up to "_"
// with the option), and all share one continuation (the rest after "_", stripped); gold is
// answer "1" -> 0, "2" -> 1; acc. Rows (JSONL): {sentence, option1, option2, answer: "1" | "2"}.
#include "data/text.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "tensor/error.h"

namespace mlr::eval {
namespace {

Doc winogrande_doc(const nlohmann::json& row) {
  Doc d;
  d.fields = json_fields(row);
  const std::string sentence = json_text(row, "sentence");
  const size_t blank = sentence.find('_');
  MLR_CHECK(blank != std::string::npos, "field \"sentence\" has no \"_\" blank");
  const std::string answer = json_text(row, "answer");
  MLR_CHECK(answer == "1" || answer == "2", "field \"answer\" is \"{}\", expected \"1\" or \"2\"", answer);
  d.choices = {sentence.substr(0, blank) + json_text(row, "option1"), sentence.substr(0, blank) + json_text(row, "option2")};
  d.target = std::string(data::strip(std::string_view(sentence).substr(blank + 1)));
  d.gold = answer == "1" ? 0 : 1;
  return d;
}

TaskDefinition winogrande() {
  TaskConfig c;
  c.name = "winogrande";
  c.version = 1.0;
  c.dataset_path = "allenai/winogrande";
  c.dataset_name = "winogrande_xl";
  c.training_split = "train";
  c.validation_split = "validation";
  c.doc_to_text = "!function preprocess_winogrande.doc_to_text";
  c.doc_to_target = "!function preprocess_winogrande.doc_to_target";
  c.doc_to_choice = "!function preprocess_winogrande.doc_to_choice";
  c.multiple_input = true;
  return single_task(std::move(c), [](const std::filesystem::path& path) {
    return read_jsonl_docs("winogrande", path, winogrande_doc);
  });
}

const TaskRegistration registration{winogrande()};

}  // namespace
}  // namespace mlr::eval

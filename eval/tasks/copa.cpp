// COPA (super_glue/copa), whose prompt is the harness's utils.py:
//   doc_to_text    premise.strip()[:-1] (the period, assumed) + " because" | " therefore"
//   doc_to_choice  " " + the choice with its first letter lowercased, so continuations begin with
//                  two spaces (target delimiter + this space)
//   doc_to_target  the correct choice's text, so gold = choices.index(it)
#include "data/text.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"
#include "tensor/error.h"

namespace mlr::eval {
namespace {

std::vector<std::string> copa_choices(const DocValues& doc) {
  std::vector<std::string> choices;
  for (const char* key : {"choice1", "choice2"}) choices.push_back(std::string(" ").append(data::lower_first(doc.at(key).string())));
  return choices;
}

TaskDefinition copa() {
  TaskConfig c = superglue_config("copa", "copa", 1.0);
  c.doc_to_text = "!function utils.doc_to_text";
  c.doc_to_choice = "!function utils.doc_to_choice";
  c.doc_to_target = "!function utils.doc_to_target";
  DocFunctions functions;
  functions.text = [](const DocValues& doc) {  // data/'s reader maps question cause|effect to "connector"
    return data::drop_last(data::strip(doc.at("premise").string())) + " " + doc.at("connector").string();
  };
  functions.choices = copa_choices;
  functions.target = [](const DocValues& doc) -> Value {
    const int64_t label = doc.at("label").integer();
    MLR_CHECK(label == 0 || label == 1, "eval: copa label {} is not 0 or 1", label);
    return copa_choices(doc)[static_cast<size_t>(label)];
  };
  return record_task(std::move(c), data::Format::copa, "superglue/COPA/val.jsonl", functions);
}

const TaskRegistration registration{copa()};

}  // namespace
}  // namespace mlr::eval

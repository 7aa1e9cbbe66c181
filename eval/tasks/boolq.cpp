// BoolQ (super_glue/boolq): the question always gets a "?".
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"

namespace mlr::eval {
namespace {

TaskDefinition boolq() {
  TaskConfig c = superglue_config("boolq", "boolq", 2.0);
  c.doc_to_text = "{{passage}}\nQuestion: {{question}}?\nAnswer:";
  c.doc_to_choice = "[\"no\", \"yes\"]";
  return record_task(std::move(c), data::Format::boolq, "boolq/val.jsonl");
}

const TaskRegistration registration{boolq()};

}  // namespace
}  // namespace mlr::eval

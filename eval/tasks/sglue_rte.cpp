// SuperGLUE RTE (super_glue/rte). The harness's "rte" is GLUE RTE, which we do not provide.
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"

namespace mlr::eval {
namespace {

TaskDefinition sglue_rte() {
  TaskConfig c = superglue_config("sglue_rte", "rte", 0.0);
  c.doc_to_text = "{{premise}}\nQuestion: {{hypothesis}} True or False?\nAnswer:";
  c.doc_to_choice = "['True', 'False']";
  TaskDefinition d = record_task(std::move(c), data::Format::rte, "superglue/RTE/val.jsonl");
  d.refused_names["rte"] = "that is GLUE RTE in lm-evaluation-harness, which is not provided; SuperGLUE RTE is \"sglue_rte\"";
  return d;
}

const TaskRegistration registration{sglue_rte()};

}  // namespace
}  // namespace mlr::eval

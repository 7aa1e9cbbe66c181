// WSC (super_glue/wsc.fixed): the passage with the pronoun marked and detokenized comes from data/'s
// reader (after the span fixes of Hugging Face's _fix_wst); the prompt is the harness's
// preprocess_wsc.default_doc_to_text.
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"

namespace mlr::eval {
namespace {

TaskDefinition wsc() {
  TaskConfig c = superglue_config("wsc", "wsc.fixed", 1.0);
  c.doc_to_text = "!function preprocess_wsc.default_doc_to_text";
  c.doc_to_choice = "['no', 'yes']";
  DocFunctions functions;
  functions.text = [prompt = PromptTemplate(
                        "Passage: {{passage}}\nQuestion: In the passage above, does the pronoun \"*{{span2_text}}*\" "
                        "refer to \"*{{span1_text}}*\"?\nAnswer:")](const DocValues& doc) { return prompt.render(doc); };
  return record_task(std::move(c), data::Format::wsc, "superglue/WSC/val.jsonl", functions);
}

const TaskRegistration registration{wsc()};

}  // namespace
}  // namespace mlr::eval

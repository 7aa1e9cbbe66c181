// WiC (super_glue/wic): the word is sentence1[start1:end1] in code points, not the "word" field.
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"

namespace mlr::eval {
namespace {

TaskDefinition wic() {
  TaskConfig c = superglue_config("wic", "wic", 1.0);
  c.doc_to_text =
      "Sentence 1: {{sentence1}}\nSentence 2: {{sentence2}}\nQuestion: Is the word '{{sentence1[start1:end1]}}' used "
      "in the same way in the two sentences above?\nAnswer:";
  c.doc_to_choice = "['no', 'yes']";
  // The reader gives the offsets as text; the harness's doc has them as integers.
  auto values = [](data::Record&& r) {
    DocValues v = record_values(std::move(r));
    for (const char* offset : {"start1", "end1"}) v[offset] = static_cast<int64_t>(std::stoll(v.at(offset).string()));
    return v;
  };
  return record_task(std::move(c), data::Format::wic, "superglue/WiC/val.jsonl", {}, values);
}

const TaskRegistration registration{wic()};

}  // namespace
}  // namespace mlr::eval

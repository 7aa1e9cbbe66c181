// CommitmentBank (super_glue/cb): acc and f1, the harness's cb_multi_fi (macro F1 over the three
// classes, a custom aggregation, so its stderr is "N/A").
#include "eval/metrics.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"

namespace mlr::eval {
namespace {

double macro_f1(const std::vector<ScoredDoc>& docs) {
  std::vector<GoldPred> items;
  for (const ScoredDoc& d : docs) items.push_back({d.doc->gold, predicted_choice(*d.results)});
  return cb_multi_f1(items);
}

TaskDefinition cb() {
  TaskConfig c = superglue_config("cb", "cb", 1.0);
  c.doc_to_text = "{{premise}}\nQuestion: {{hypothesis}}. True, False, or Neither?\nAnswer:";
  c.doc_to_choice = "['True', 'False', 'Neither']";
  c.metrics.push_back({.name = "f1", .aggregation = "cb_multi_fi (macro F1 over the 3 classes)", .aggregate = macro_f1});
  return record_task(std::move(c), data::Format::cb, "superglue/CB/val.jsonl");
}

const TaskRegistration registration{cb()};

}  // namespace
}  // namespace mlr::eval

// MultiRC (super_glue/multirc): one doc per answer option; the choices are
// [answer + "\nIs the answer correct? yes", "... no"] with gold = label (1 = a correct answer), i.e.
// the harness's inverted mapping, kept. acc per option is the harness's metric. f1a and em are
// extras of ours (the harness's default task has neither), custom aggregations with stderr "N/A":
// an option is predicted correct when its "yes" choice scores at least as high as "no"; f1a is the
// binary F1 of predicted vs labelled correct over all options, em the fraction of questions
// (consecutive options with the same paragraph and question) with every option right.
#include "eval/metrics.h"
#include "eval/task_docs.h"
#include "eval/task_registry.h"
#include "eval/tasks/superglue.h"

namespace mlr::eval {
namespace {

struct OptionCall {
  bool predicted_correct, labelled_correct;
};

OptionCall option_call(const ScoredDoc& d) {
  return {d.results->at(0).logprob >= d.results->at(1).logprob, d.doc->gold == 1};
}

double answer_f1(const std::vector<ScoredDoc>& docs) {
  std::vector<GoldPred> items;
  for (const ScoredDoc& d : docs) {
    const OptionCall call = option_call(d);
    items.push_back({call.labelled_correct ? 1 : 0, call.predicted_correct ? 1 : 0});
  }
  return binary_f1(items);
}

double exact_match(const std::vector<ScoredDoc>& docs) {
  auto question_of = [](const Doc& doc) { return *doc.field("paragraph") + '\x1f' + *doc.field("question"); };
  std::vector<double> question_right;
  for (size_t i = 0; i < docs.size(); ++i) {
    const OptionCall call = option_call(docs[i]);
    const bool right = call.predicted_correct == call.labelled_correct;
    if (i == 0 || question_of(*docs[i].doc) != question_of(*docs[i - 1].doc)) {
      question_right.push_back(right ? 1.0 : 0.0);
    } else if (!right) {
      question_right.back() = 0.0;
    }
  }
  return mean(question_right);
}

TaskDefinition multirc() {
  TaskConfig c = superglue_config("multirc", "multirc", 2.0);
  c.doc_to_text = "{{paragraph}}\nQuestion: {{question}}\nAnswer:";
  c.doc_to_choice = "['''{{answer}}\\nIs the answer correct? yes''', '''{{answer}}\\nIs the answer correct? no''']";
  const std::string ours = "mlr extra (not a harness metric of this task)";
  c.metrics.push_back({.name = "f1a", .aggregation = ours, .aggregate = answer_f1});
  c.metrics.push_back({.name = "em", .aggregation = ours, .aggregate = exact_match});
  return record_task(std::move(c), data::Format::multirc, "superglue/MultiRC/val.jsonl");
}

const TaskRegistration registration{multirc()};

}  // namespace
}  // namespace mlr::eval

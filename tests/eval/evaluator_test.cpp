// End-to-end runs of the evaluator with fake deterministic scorers: the aggregated numbers are
// worked out by hand (or counted from the data independently of the scorer), and the results JSON
// has the harness's keys.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "data/readers.h"
#include "eval/evaluator.h"
#include "eval/metrics.h"
#include "eval/tasks.h"
#include "tensor/error.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace mlr::eval;
using json = nlohmann::json;

namespace {

const fs::path kData = fs::path(MLR_SOURCE_DIR) / ".." / "shared" / "data";

// Log-likelihoods from a table keyed by (context, continuation); anything else is an error.
class TableScorer : public LanguageModelScorer {
 public:
  std::map<std::pair<std::string, std::string>, double> table;
  int64_t calls = 0;
  std::vector<LoglikelihoodResult> loglikelihood(const std::vector<LoglikelihoodRequest>& requests) override {
    ++calls;
    std::vector<LoglikelihoodResult> out;
    for (const auto& r : requests) {
      auto it = table.find({r.context, r.continuation});
      if (it == table.end()) throw mlr::Error("TableScorer: no entry for (" + r.context + ", " + r.continuation + ")");
      out.push_back({it->second, false});
    }
    return out;
  }
  std::vector<std::string> generate_until(const std::vector<GenerationRequest>&) override {
    throw mlr::Error("TableScorer: no generation");
  }
  std::string name() const override { return "table"; }
};

// Prefers the continuation " A" (log-likelihood 0) over everything else (-1).
class AlwaysAScorer : public LanguageModelScorer {
 public:
  std::vector<LoglikelihoodResult> loglikelihood(const std::vector<LoglikelihoodRequest>& requests) override {
    std::vector<LoglikelihoodResult> out;
    for (const auto& r : requests) out.push_back({r.continuation == " A" ? 0.0 : -1.0, r.continuation == " A"});
    return out;
  }
  std::vector<std::string> generate_until(const std::vector<GenerationRequest>&) override { return {}; }
  std::string name() const override { return "always-a"; }
};

Doc toy_doc(const std::string& text, int gold) {
  Doc d;
  d.fields = {{"q", text}};
  d.text = text;
  d.choices = {"a", "bbbb"};
  d.gold = gold;
  return d;
}

}  // namespace

TEST_CASE("acc, acc_norm and their stderr on hand-computed docs") {
  Task toy;
  toy.config.name = "toy";
  toy.config.version = 1.0;
  toy.config.metrics = {Metric{.name = "acc"}, Metric{.name = "acc_norm"}};
  toy.docs = {toy_doc("q0", 1), toy_doc("q1", 0), toy_doc("q2", 1), toy_doc("q3", -100)};
  TableScorer scorer;
  // doc: lls (a, bbbb)  -> argmax | normalized by 1 and 4 chars -> argmax | gold | acc acc_norm
  // q0:  -1, -2         -> 0      | -1, -0.5                    -> 1      | 1    | 0   1
  // q1:  -1, -3         -> 0      | -1, -0.75                   -> 1      | 0    | 1   0
  // q2:  -2, -2 (tie)   -> 0      | -2, -0.5                    -> 1      | 1    | 0   1
  // q3:   0, -1         -> 0      |  0, -0.25                   -> 0      | -100 | 0   0
  const double lls[4][2] = {{-1, -2}, {-1, -3}, {-2, -2}, {0, -1}};
  for (int i = 0; i < 4; ++i) {
    scorer.table[{"q" + std::to_string(i), " a"}] = lls[i][0];
    scorer.table[{"q" + std::to_string(i), " bbbb"}] = lls[i][1];
  }
  EvalOptions options;
  options.log_samples = true;
  const EvalResults r = evaluate({toy}, {}, scorer, options);
  CHECK(scorer.calls == 1);  // every request in one call
  REQUIRE(r.tasks.size() == 1);
  const auto& m = r.tasks[0].metrics;
  REQUIRE(m.size() == 2);
  CHECK(m[0].name == "acc");
  CHECK(m[0].value == doctest::Approx(0.25));
  CHECK(*m[0].standard_error == doctest::Approx(0.25));  // sd of {0,1,0,0} is 0.5, / sqrt(4)
  CHECK(m[1].name == "acc_norm");
  CHECK(m[1].value == doctest::Approx(0.5));
  CHECK(*m[1].standard_error == doctest::Approx(std::sqrt(1.0 / 3.0) / 2.0));
  // --limit 2 scores the first two docs only.
  options.limit = 2;
  const EvalResults limited = evaluate({toy}, {}, scorer, options);
  CHECK(limited.tasks[0].n_effective == 2);
  CHECK(limited.tasks[0].n_original == 4);
  CHECK(limited.tasks[0].metrics[0].value == doctest::Approx(0.5));
  // Samples JSONL: one line per doc with per-choice log-likelihoods.
  std::ostringstream samples;
  write_samples_jsonl(r.tasks[0], samples);
  std::istringstream lines(samples.str());
  std::string line;
  int n = 0;
  while (std::getline(lines, line)) {
    const json s = json::parse(line);
    CHECK(s["doc_id"] == n);
    CHECK(s["filtered_resps"].size() == 2);
    CHECK(s["filtered_resps"][1][0].get<double>() == lls[n][1]);
    CHECK(s["arguments"]["gen_args_1"]["arg_1"] == " bbbb");
    CHECK(s.contains("acc_norm"));
    ++n;
  }
  CHECK(n == 4);
}

TEST_CASE("CB f1 (macro over classes, stderr N/A) and the MultiRC extras f1a and em") {
  // CB: golds 0,1,2,0, predictions (argmax) 0,1,1,1. Class 0: TP 1, FN 1 -> 2/3; class 1: TP 1,
  // FP 2 -> 1/2; class 2: 0. Macro F1 = (2/3 + 1/2 + 0) / 3 = 7/18.
  // Both tasks as registered (eval/tasks/cb.cpp, multirc.cpp), from files in the SuperGLUE layout.
  TempDir dir;
  const char* cb_labels[] = {"entailment", "contradiction", "neutral", "entailment"};
  std::string cb_rows;
  for (int i = 0; i < 4; ++i) {
    cb_rows += json{{"premise", "p" + std::to_string(i)}, {"hypothesis", "h"}, {"label", cb_labels[i]}}.dump() + "\n";
  }
  const Task cb = load_task("cb", dir.write("cb.jsonl", cb_rows));
  TableScorer scorer;
  const int golds[] = {0, 1, 2, 0}, preds[] = {0, 1, 1, 1};
  for (int i = 0; i < 4; ++i) {
    const Doc& d = cb.docs[static_cast<size_t>(i)];
    REQUIRE(d.gold == golds[i]);
    for (int c = 0; c < 3; ++c) scorer.table[{d.text, " " + d.choices[static_cast<size_t>(c)]}] = c == preds[i] ? -1.0 : -2.0;
  }
  // MultiRC: question 1 has options labelled correct (1) and incorrect (0), question 2 one correct
  // option. The model says "yes" to all three. Harness acc (gold = label, choice 0 = "yes"):
  // 0, 1, 0 -> 1/3. f1a over "correct": TP 2, FP 1, FN 0 -> 0.8. em: question 1 wrong, 2 right -> 0.5.
  const char* questions[] = {"Q1", "Q1", "Q2"};
  const int labels[] = {1, 0, 1};
  std::string multirc_rows;
  for (int i = 0; i < 3; ++i) {
    multirc_rows += json{{"paragraph", "P"}, {"question", questions[i]}, {"answer", "ans" + std::to_string(i)},
                         {"label", labels[i]}}.dump() + "\n";
  }
  const Task multirc = load_task("multirc", dir.write("multirc.jsonl", multirc_rows));
  for (const Doc& d : multirc.docs) {
    scorer.table[{d.text, " " + d.choices[0]}] = -1.0;  // yes
    scorer.table[{d.text, " " + d.choices[1]}] = -3.0;  // no
  }
  const EvalResults r = evaluate({cb, multirc}, {}, scorer);
  REQUIRE(r.tasks.size() == 2);
  CHECK(r.tasks[0].metrics[0].value == doctest::Approx(0.5));
  CHECK(r.tasks[0].metrics[1].name == "f1");
  CHECK(r.tasks[0].metrics[1].value == doctest::Approx(7.0 / 18.0));
  CHECK(!r.tasks[0].metrics[1].standard_error.has_value());
  CHECK(r.tasks[1].metrics[0].value == doctest::Approx(1.0 / 3.0));
  CHECK(r.tasks[1].metrics[1].value == doctest::Approx(0.8));
  CHECK(r.tasks[1].metrics[2].value == doctest::Approx(0.5));
  const json j = results_json(r);
  CHECK(j["results"]["cb"]["f1_stderr,none"] == "N/A");
  CHECK(j["results"]["multirc"]["em,none"].get<double>() == doctest::Approx(0.5));
}

TEST_CASE("MMLU end to end on real data: per-subject acc, groups, results JSON, table" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(fs::exists(kData / "mmlu"), "../shared/data is absent");
  const auto tasks = load_mmlu(kData / "mmlu", "test", {"abstract_algebra", "anatomy", "philosophy"});
  const auto groups = mmlu_groups(tasks);
  AlwaysAScorer scorer;
  EvalOptions options;
  options.num_fewshot = 5;
  options.limit = 20;
  const EvalResults r = evaluate(tasks, groups, scorer, options);
  REQUIRE(r.tasks.size() == 3);
  // Always answering A: acc = the share of the first 20 rows whose answer letter is A, counted here
  // from the CSVs through the data reader.
  std::vector<double> expected;
  for (const char* subject : {"abstract_algebra", "anatomy", "philosophy"}) {
    const auto read = mlr::data::read_records(mlr::data::Format::mmlu,
                                              kData / "mmlu" / "test" / (std::string(subject) + "_test.csv"));
    int a = 0;
    for (int i = 0; i < 20; ++i) a += *read.records[static_cast<size_t>(i)].field("answer") == "A";
    expected.push_back(a / 20.0);
  }
  for (size_t t = 0; t < 3; ++t) {
    CHECK(r.tasks[t].metrics[0].value == doctest::Approx(expected[t]));
    CHECK(r.tasks[t].n_effective == 20);
    CHECK(r.tasks[t].num_fewshot == 5);
  }
  const json j = results_json(r);
  // Groups present: mmlu_stem (2 subjects), mmlu_humanities (1), mmlu.
  REQUIRE(j["groups"].size() == 3);
  const double stem = (expected[0] * 20 + expected[1] * 20) / 40;
  CHECK(j["results"]["mmlu_stem"]["acc,none"].get<double>() == doctest::Approx(stem));
  CHECK(j["results"]["mmlu"]["acc,none"].get<double>() == doctest::Approx((expected[0] + expected[1] + expected[2]) / 3));
  CHECK(j["results"]["mmlu"]["sample_count"]["acc,none"] == 60);
  CHECK(j["results"]["mmlu"]["acc_macro,none"].get<double>() == doctest::Approx((expected[0] + expected[1] + expected[2]) / 3));
  // The mmlu stderr is pooled over the three subjects' stderrs.
  std::vector<std::optional<double>> ses;
  for (const auto& t : r.tasks) ses.push_back(t.metrics[0].standard_error);
  CHECK(j["results"]["mmlu"]["acc_stderr,none"].get<double>() == doctest::Approx(*pooled_sample_stderr(ses, {20, 20, 20})));
  CHECK(j["results"]["mmlu_abstract_algebra"]["alias"] == "abstract_algebra");
  CHECK(j["results"]["mmlu_abstract_algebra"].contains("acc_stderr,none"));
  CHECK(j["results"]["mmlu_stem"]["alias"] == "stem");
  CHECK(j["group_subtasks"]["mmlu"] == json({"mmlu_stem", "mmlu_humanities"}));
  CHECK(j["group_subtasks"]["mmlu_stem"] == json({"mmlu_abstract_algebra", "mmlu_anatomy"}));
  CHECK(j["versions"]["mmlu_anatomy"] == 1.0);
  CHECK(j["versions"]["mmlu"] == "2");
  CHECK(j["n-shot"]["mmlu_anatomy"] == 5);
  CHECK(j["n-shot"]["mmlu"] == 5);
  CHECK(j["n-samples"]["mmlu_philosophy"] == json({{"original", 311}, {"effective", 20}}));
  CHECK(j["higher_is_better"]["mmlu_anatomy"]["acc"] == true);
  CHECK(j["configs"]["mmlu_anatomy"]["fewshot_split"] == "dev");
  CHECK(j["configs"]["mmlu_anatomy"]["fewshot_config"]["sampler"] == "first_n");
  CHECK(j["configs"]["mmlu_anatomy"]["num_fewshot"] == 5);
  CHECK(j["configs"]["mmlu_anatomy"]["description"] ==
        "The following are multiple choice questions (with answers) about anatomy.\n\n");
  CHECK(j["config"]["model"] == "always-a");
  const std::string table = results_table(r);
  CHECK(table.find("|Tasks") == 0);
  CHECK(table.find(" - abstract_algebra") != std::string::npos);
  CHECK(table.find("|Groups") != std::string::npos);
  CHECK(table.find(fmt::format("{:.4f}", expected[2])) != std::string::npos);
}

namespace {

// ll = -((UTF-8 bytes of the context * 31 + sum of the continuation's bytes) mod 101) / 10: a
// deterministic stand-in for a model that the Python side computes identically.
class HashScorer : public LanguageModelScorer {
 public:
  std::vector<LoglikelihoodResult> loglikelihood(const std::vector<LoglikelihoodRequest>& requests) override {
    std::vector<LoglikelihoodResult> out;
    for (const auto& r : requests) {
      uint64_t byte_sum = 0;
      for (unsigned char c : r.continuation) byte_sum += c;
      out.push_back({-static_cast<double>((r.context.size() * 31 + byte_sum) % 101) / 10.0, false});
    }
    return out;
  }
  std::vector<std::string> generate_until(const std::vector<GenerationRequest>&) override { return {}; }
  std::string name() const override { return "hash"; }
};

}  // namespace

TEST_CASE("aggregates equal lm-evaluation-harness's own process_results / aggregation on real data" *
          mlr_test::needs_external) {
  // Expected: lm_eval 0.4.13, its task objects over the shared files (as scripts/eval/
  // render_with_harness.py loads them), task.process_results on the same fake log-likelihoods,
  // task.aggregation() and stderr_for_metric(bootstrap_iters=100000); groups with its
  // aggregate_subtask_metrics(weight_by_size=True) and pooled_sample_stderr. SuperGLUE 0-shot on
  // the full validation files, MMLU 5-shot on the first 20 test rows of each of the 57 subjects.
  MLR_SKIP_UNLESS(fs::exists(kData / "mmlu") && fs::exists(kData / "superglue"), "../shared/data is absent");
  std::vector<Task> tasks;
  const std::vector<std::pair<std::string, fs::path>> superglue{
      {"boolq", kData / "boolq" / "val.jsonl"},           {"cb", kData / "superglue" / "CB" / "val.jsonl"},
      {"copa", kData / "superglue" / "COPA" / "val.jsonl"}, {"multirc", kData / "superglue" / "MultiRC" / "val.jsonl"},
      {"sglue_rte", kData / "superglue" / "RTE" / "val.jsonl"}, {"wic", kData / "superglue" / "WiC" / "val.jsonl"},
      {"wsc", kData / "superglue" / "WSC" / "val.jsonl"}};
  HashScorer scorer;
  for (const auto& [name, path] : superglue) tasks.push_back(load_task(name, path));
  const EvalResults sg = evaluate(tasks, {}, scorer);
  const json j = results_json(sg);
  struct Expected {
    std::string task, key;
    double value;
  };
  const std::vector<Expected> superglue_expected{
      {"boolq", "acc,none", 0.41162079510703364},          {"boolq", "acc_stderr,none", 0.008607357686607966},
      {"cb", "acc,none", 0.44642857142857145},             {"cb", "acc_stderr,none", 0.06703189227942398},
      {"cb", "f1,none", 0.28905472636815915},              {"copa", "acc,none", 0.52},
      {"copa", "acc_stderr,none", 0.050211673156867795},   {"multirc", "acc,none", 0.44575082508250824},
      {"multirc", "acc_stderr,none", 0.007139406258860905}, {"sglue_rte", "acc,none", 0.49458483754512633},
      {"sglue_rte", "acc_stderr,none", 0.030094698123239966}, {"wic", "acc,none", 0.47648902821316613},
      {"wic", "acc_stderr,none", 0.019788807795837516},    {"wsc", "acc,none", 0.5769230769230769},
      {"wsc", "acc_stderr,none", 0.04867993747918684}};
  for (const auto& e : superglue_expected) {
    CAPTURE(e.task);
    CAPTURE(e.key);
    CHECK(j["results"][e.task][e.key].get<double>() == doctest::Approx(e.value).epsilon(1e-12));
  }
  CHECK(j["results"]["cb"]["f1_stderr,none"] == "N/A");
  CHECK(j["results"]["multirc"]["sample_len"] == 4848);

  const auto mmlu = load_mmlu(kData / "mmlu");
  EvalOptions options;
  options.num_fewshot = 5;
  options.limit = 20;
  const json m = results_json(evaluate(mmlu, mmlu_groups(mmlu), scorer, options));
  const std::vector<Expected> mmlu_expected{
      {"mmlu_abstract_algebra", "acc,none", 0.2},         {"mmlu_abstract_algebra", "acc_stderr,none", 0.09176629354822471},
      {"mmlu_world_religions", "acc,none", 0.25},         {"mmlu_world_religions", "acc_stderr,none", 0.09933992677987828},
      {"mmlu_stem", "acc,none", 0.24210526315789474},     {"mmlu_stem", "acc_stderr,none", 0.02195105159180979},
      {"mmlu_other", "acc,none", 0.21923076923076923},    {"mmlu_other", "acc_stderr,none", 0.025497235150334033},
      {"mmlu_social_sciences", "acc,none", 0.23333333333333334},
      {"mmlu_social_sciences", "acc_stderr,none", 0.02696922656077756},
      {"mmlu_humanities", "acc,none", 0.25},              {"mmlu_humanities", "acc_stderr,none", 0.027410282289867333},
      {"mmlu", "acc,none", 0.23684210526315788},          {"mmlu", "acc_stderr,none", 0.012596519520437778}};
  for (const auto& e : mmlu_expected) {
    CAPTURE(e.task);
    CAPTURE(e.key);
    CHECK(m["results"][e.task][e.key].get<double>() == doctest::Approx(e.value).epsilon(1e-12));
  }
  CHECK(m["results"]["mmlu"]["sample_count"]["acc,none"] == 1140);
  CHECK(m["results"]["mmlu_stem"]["sample_len"] == 380);
}

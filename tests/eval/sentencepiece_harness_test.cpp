// lm-evaluation-harness cross-check on a sentencepiece checkpoint: a tiny random LLaMA (vocabulary
// 32000, tied bf16 embeddings) with the shared LLaMA tokenizer.model and a tokenizer_config.json
// as Meta's checkpoints ship it (LlamaTokenizer, add_bos_token). The harness's HFLM side (f32,
// CPU) was recorded by scripts/fixtures/make_sentencepiece_harness_fixture.py in
// tests/fixtures/eval/sentencepiece_llama/loglikelihoods.json: COPA (100 docs; continuations start
// with two spaces), BoolQ (200), CB (2-shot), MultiRC, WiC, RTE, WSC, two MMLU subjects (5-shot,
// contexts left-truncated to 512 tokens) and greedy generate_until with GSM8K's stop strings.
// Every request: context hash, continuation, log-likelihood within 1e-4, is_greedy; every metric
// exactly. The sentencepiece library's tokens (TokenizerBackend::sentencepiece) are shown to
// differ on COPA, which is what the default backend fixes. Skips when ../shared is absent.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/text.h"
#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "llama/tokenizer.h"
#include "tests/eval/harness_fixture.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using namespace mlr;
using namespace mlr::eval;
using json = nlohmann::json;

namespace {

const fs::path kRoot(MLR_SOURCE_DIR);
const fs::path kData = kRoot / ".." / "shared" / "data";
const fs::path kTokenizerModel = kRoot / ".." / "shared" / "models" / "llama-tokenizer" / "tokenizer.model";
const fs::path kFixture = kRoot / "tests" / "fixtures" / "eval" / "sentencepiece_llama";

std::vector<Task> load_fixture_task(const std::string& name) {
  if (name.starts_with("mmlu_")) return load_mmlu(kData / "mmlu", "test", {name.substr(5)});
  const std::map<std::string, fs::path> files{
      {"boolq", kData / "boolq" / "val.jsonl"},           {"cb", kData / "superglue" / "CB" / "val.jsonl"},
      {"copa", kData / "superglue" / "COPA" / "val.jsonl"}, {"multirc", kData / "superglue" / "MultiRC" / "val.jsonl"},
      {"sglue_rte", kData / "superglue" / "RTE" / "val.jsonl"}, {"wic", kData / "superglue" / "WiC" / "val.jsonl"},
      {"wsc", kData / "superglue" / "WSC" / "val.jsonl"}};
  const fs::path& file = files.at(name);
  return {load_task(name, file, file)};
}

EvalResults run(const json& expected, TokenizedScorer& scorer) {
  EvalOptions options;
  options.num_fewshot = expected["num_fewshot"].get<int64_t>();
  options.limit = expected["limit"].get<double>();
  options.log_samples = true;
  return evaluate(load_fixture_task(expected["task"]), {}, scorer, options);
}

// The largest |ll difference| over a task's requests (contexts and continuations must match).
double worst_difference(const json& expected, const EvalResults& r) {
  double worst = 0.0;
  const auto& samples = r.tasks.at(0).samples;
  for (const json& req : expected["requests"]) {
    const auto doc = req["doc"].get<size_t>(), choice = req["choice"].get<size_t>();
    worst = std::max(worst, std::abs(samples.at(doc).results.at(choice).logprob - req["ll"].get<double>()));
  }
  return worst;
}

}  // namespace

TEST_CASE("sentencepiece LLaMA: per-request log-likelihoods and metrics equal lm-evaluation-harness HFLM" *
          mlr_test::needs_external) {
  MLR_SKIP_UNLESS(fs::exists(kData) && fs::exists(kTokenizerModel),
                  "../shared/data or ../shared/models/llama-tokenizer is absent");
  TempDir model_dir;
  for (const char* name : {"config.json", "model.safetensors", "tokenizer_config.json"})
    fs::copy_file(kFixture / name, model_dir.path / name);
  fs::copy_file(kTokenizerModel, model_dir.path / "tokenizer.model");
  std::ifstream in(kFixture / "loglikelihoods.json");
  REQUIRE(in.good());
  const json fixture = json::parse(in);

  auto model = LlamaForCausalLM::from_pretrained(model_dir.path.string(), DType::f32);
  const auto tokenizer = load_tokenizer(model_dir.path.string());
  CHECK(tokenizer->adds_bos());
  LlamaContinuationModel continuation_model(*model);
  CHECK(continuation_model.max_length() == fixture["max_length"].get<int64_t>());
  TokenizedScorer scorer(*tokenizer, continuation_model, "sentencepiece-llama");
  int64_t compared = 0;
  for (const json& expected : fixture["tasks"]) {
    const std::string name = expected["task"];
    CAPTURE(name);
    const EvalResults r = run(expected, scorer);
    REQUIRE(r.tasks.size() == 1);
    const auto& samples = r.tasks[0].samples;
    const testing::RequestComparison c = testing::check_requests(expected, samples);
    compared += c.compared;
    const std::vector<double> doc_acc = expected["doc_acc"];
    for (size_t d = 0; d < doc_acc.size(); ++d) {
      CAPTURE(d);
      CHECK(samples.at(d).metrics.at(0).first == "acc");
      CHECK(samples.at(d).metrics.at(0).second == doc_acc[d]);
    }
    for (const auto& [metric, value] : expected["metrics"].items()) {
      CAPTURE(metric);
      const auto it = std::find_if(r.tasks[0].metrics.begin(), r.tasks[0].metrics.end(),
                                   [&](const MetricValue& m) { return m.name == metric && m.filter == "none"; });
      REQUIRE(it != r.tasks[0].metrics.end());
      CHECK(it->value == doctest::Approx(value.get<double>()).epsilon(1e-12));
    }
    MESSAGE(name << ": " << c.compared << " requests, largest |ll difference| " << c.worst << ", "
                 << expected["metrics"].dump());
  }
  CHECK(compared >= 900);

  // Greedy generate_until with GSM8K's stop strings: the same text as transformers' decode.
  testing::check_generations(fixture["generations"], scorer, [](const std::string& s) { return s; });

  // The sentencepiece library's tokens (tokenizer.backend: sentencepiece) split COPA's
  // "  " continuations differently, and the log-likelihoods are far off.
  const auto sp_tokenizer = load_tokenizer(model_dir.path.string(), TokenizerBackend::sentencepiece);
  TokenizedScorer sp_scorer(*sp_tokenizer, continuation_model, "sentencepiece-llama (sentencepiece backend)");
  const json& copa = fixture["tasks"][0];
  REQUIRE(copa["task"] == "copa");
  const EvalResults sp_results = run(copa, sp_scorer);
  const double sp_worst = worst_difference(copa, sp_results);
  MESSAGE("copa with the sentencepiece library's tokens: largest |ll difference| " << sp_worst << ", acc "
                                                                                   << sp_results.tasks[0].metrics[0].value);
  CHECK(sp_worst > 1.0);
}

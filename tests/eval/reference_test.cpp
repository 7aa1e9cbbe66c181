// The reference check: per-choice log-likelihoods of the fixture model configs/demo/model
// (a tiny LLaMA with a GPT-2 style tokenizer, no BOS) on a fixed slice of the shared data, against
// lm-evaluation-harness's own HFLM backend (f32, CPU) recorded by
// scripts/eval/reference_loglikelihoods.py in tests/fixtures/eval/demo_loglikelihoods.json.
// Ours: our task loaders and prompts, TokenizedScorer (split, truncation to 512 tokens) and
// LlamaContinuationModel. Every request's context must hash equal, continuations equal,
// log-likelihoods within 1e-4, greedy flags and accuracies identical; greedy generations equal.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>

#include "data/text.h"
#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "eval/tasks.h"
#include "llama/tokenizer.h"
#include "tests/eval/harness_fixture.h"

namespace fs = std::filesystem;
using namespace mlr;
using namespace mlr::eval;
using json = nlohmann::json;

TEST_CASE("demo model: per-choice log-likelihoods and acc equal lm-evaluation-harness HFLM" * mlr_test::needs_external) {
  const fs::path root(MLR_SOURCE_DIR);
  const fs::path data = root / ".." / "shared" / "data";
  const fs::path model_dir = root / "configs" / "demo" / "model";
  MLR_SKIP_UNLESS(fs::exists(data) && fs::exists(model_dir / "model.safetensors"),
                  "../shared/data or configs/demo/model is absent");
  std::ifstream in(root / "tests" / "fixtures" / "eval" / "demo_loglikelihoods.json");
  REQUIRE(in.good());
  const json fixture = json::parse(in);
  auto model = LlamaForCausalLM::from_pretrained(model_dir.string(), DType::f32);
  const auto tokenizer = load_tokenizer(model_dir.string());
  LlamaContinuationModel continuation_model(*model);
  CHECK(continuation_model.max_length() == fixture["max_length"].get<int64_t>());
  TokenizedScorer scorer(*tokenizer, continuation_model, "demo");
  double max_difference = 0.0;
  int64_t compared = 0;
  for (const json& expected : fixture["tasks"]) {
    const std::string name = expected["task"];
    CAPTURE(name);
    std::vector<Task> tasks;
    if (name.starts_with("mmlu_")) {
      tasks = load_mmlu(data / "mmlu", "test", {name.substr(5)});
    } else {
      const fs::path file = name == "boolq" ? data / "boolq" / "val.jsonl"
                            : name == "copa" ? data / "superglue" / "COPA" / "val.jsonl"
                                             : data / "superglue" / "CB" / "val.jsonl";
      tasks.push_back(load_task(name, file, file));
    }
    EvalOptions options;
    options.num_fewshot = expected["num_fewshot"].get<int64_t>();
    options.limit = expected["limit"].get<double>();
    options.log_samples = true;
    const EvalResults r = evaluate(tasks, {}, scorer, options);
    REQUIRE(r.tasks.size() == 1);
    const auto& samples = r.tasks[0].samples;
    const testing::RequestComparison c = testing::check_requests(expected, samples);
    max_difference = std::max(max_difference, c.worst);
    compared += c.compared;
    for (size_t d = 0; d < samples.size(); ++d) {
      CAPTURE(d);
      CHECK(samples[d].metrics.at(0).second == expected["doc_acc"][d].get<double>());
    }
    CHECK(r.tasks[0].metrics[0].value == doctest::Approx(expected["acc"].get<double>()));
  }
  MESSAGE(compared << " requests compared; largest |ll difference| " << max_difference);
  CHECK(compared == 94);

  // Greedy generate_until with GSM8K's stop strings. The tokenizer's decode returns the raw bytes of
  // a partial UTF-8 sequence where Hugging Face's decode writes U+FFFD, so both are compared after
  // the same replacement (nlohmann's error_handler_t::replace, one U+FFFD per invalid byte).
  auto replaced = [](const std::string& s) { return json(s).dump(-1, ' ', false, json::error_handler_t::replace); };
  testing::check_generations(fixture["generations"], scorer, replaced);
}

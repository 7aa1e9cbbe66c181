// GSM8K: answer filters and exact_match against Python's re on the harness's patterns (values
// computed with CPython 3.11 re.findall / re.sub), few-shot draws against random.Random(1234), and
// an end-to-end run with a fake generator.
#include <doctest/doctest.h>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "eval/evaluator.h"
#include "eval/task_registry.h"
#include "eval/tasks/gsm8k.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace mlr::eval;
using json = nlohmann::json;

TEST_CASE("gsm8k filters match Python's re.findall on the harness's patterns") {
  struct Case {
    std::string response, strict, flexible;
  };
  const std::vector<Case> cases{
      {"The answer is #### 1,234.\n", "1,234.", "1,234."},
      {"so 5 + 3 = 8. #### -12", "-12", "-12"},
      {"#### -x #### 7", "7", "7"},
      {"no number here", "[invalid]", "[invalid]"},
      {"He paid $1,200.50 for 3 items.", "[invalid]", "3"},
      {"Total: -$5 and -7", "[invalid]", "-7"},
      {"Answer: 42.\n\nQuestion:", "[invalid]", "42."},
      {"-5", "[invalid]", "-5"},
      {"1.", "[invalid]", "1."},
      {"x-1-2", "[invalid]", "-2"},
      {"#### 3 and #### 4", "3", "4"},
      {"costs $.", "[invalid]", "$."},
      {"3, 4, 5", "[invalid]", "5"},
      {"#### - 9", "[invalid]", "9"},
  };
  for (const auto& c : cases) {
    CAPTURE(c.response);
    CHECK(gsm8k_strict_match(c.response) == c.strict);
    CHECK(gsm8k_flexible_extract(c.response) == c.flexible);
  }
}

TEST_CASE("gsm8k exact_match normalisation (regexes_to_ignore, ignore_case)") {
  CHECK(gsm8k_normalize("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72") == "72");
  CHECK(gsm8k_normalize("$1,000.") == "1000");
  CHECK(gsm8k_normalize("72.\n") == "72\n");
  CHECK(gsm8k_normalize("A #### b #### C.") == "c");
  CHECK(gsm8k_normalize("7.\n\n") == "7.\n\n");
  CHECK(gsm8k_exact_match("1,234.", "Some work\n#### 1234"));
  CHECK(!gsm8k_exact_match("[invalid]", "#### 5"));
}

TEST_CASE("gsm8k end to end: 5 shots from Random(1234), filters, exact_match per filter") {
  const fs::path dir = fs::temp_directory_path() / ("mlr_eval_gsm8k_" + std::to_string(getpid()));
  fs::create_directories(dir);
  {
    std::ofstream train(dir / "train.jsonl");
    for (int i = 0; i < 8; ++i) {
      train << json{{"question", "Q" + std::to_string(i) + "?"}, {"answer", "Work " + std::to_string(i) + "\n#### " + std::to_string(i)}}.dump()
            << "\n";
    }
    std::ofstream test(dir / "test.jsonl");
    test << json{{"question", "What is 6*7?"}, {"answer", "6*7=<<6*7=42>>42\n#### 42"}}.dump() << "\n";
    test << json{{"question", "What is 1000+234?"}, {"answer", "#### 1234"}}.dump() << "\n";
  }
  const Task task = load_task("gsm8k", dir / "test.jsonl", dir / "train.jsonl");
  fs::remove_all(dir);
  CHECK(task.config.default_num_fewshot == 5);
  CHECK(!task.config.draws_extra_shot());
  // Python: r = random.Random(1234); r.sample(range(8), 5) -> [7, 0, 6, 5, 4], then [1, 0, 2, 7, 6].
  PromptBuilder builder(task, 5);
  const RenderedDoc first = builder.render(task.docs[0]);
  CHECK(first.shot_indices == std::vector<size_t>{7, 0, 6, 5, 4});
  CHECK(builder.render(task.docs[1]).shot_indices == std::vector<size_t>{1, 0, 2, 7, 6});
  REQUIRE(first.generation.has_value());
  CHECK(first.context.starts_with("Question: Q7?\nAnswer: Work 7\n#### 7\n\nQuestion: Q0?\nAnswer: Work 0\n#### 0\n\n"));
  CHECK(first.context.ends_with("\n\nQuestion: What is 6*7?\nAnswer:"));
  CHECK(first.generation->until == std::vector<std::string>{"Question:", "</s>", "<|im_end|>"});
  CHECK(first.generation->max_gen_toks == 256);

  // Doc 0: "#### 42" -> both filters right. Doc 1: no "####", last number 1,234 -> only flexible right.
  class FakeGenerator : public LanguageModelScorer {
   public:
    std::vector<LoglikelihoodResult> loglikelihood(const std::vector<LoglikelihoodRequest>&) override {
      throw mlr::Error("no loglikelihood");
    }
    std::vector<std::string> generate_until(const std::vector<GenerationRequest>& requests) override {
      std::vector<std::string> out;
      for (const auto& r : requests) {
        out.push_back(r.context.ends_with("6*7?\nAnswer:") ? " 6 times 7 is 42.\n#### 42" : " It is 1,234.");
      }
      return out;
    }
    std::string name() const override { return "fake-generator"; }
  } scorer;
  EvalOptions options;
  options.log_samples = true;
  const EvalResults r = evaluate({task}, {}, scorer, options);
  REQUIRE(r.tasks.size() == 1);
  CHECK(r.tasks[0].num_fewshot == 5);
  const json j = results_json(r);
  CHECK(j["results"]["gsm8k"]["exact_match,strict-match"].get<double>() == doctest::Approx(0.5));
  CHECK(j["results"]["gsm8k"]["exact_match,flexible-extract"].get<double>() == doctest::Approx(1.0));
  CHECK(j["results"]["gsm8k"]["exact_match_stderr,strict-match"].get<double>() == doctest::Approx(0.5));
  CHECK(j["results"]["gsm8k"]["exact_match_stderr,flexible-extract"].get<double>() == 0.0);
  CHECK(j["configs"]["gsm8k"]["output_type"] == "generate_until");
  CHECK(j["versions"]["gsm8k"] == 3.0);
  std::ostringstream samples;
  write_samples_jsonl(r.tasks[0], samples);
  std::istringstream lines(samples.str());
  std::string line;
  std::vector<json> parsed;
  while (std::getline(lines, line)) parsed.push_back(json::parse(line));
  REQUIRE(parsed.size() == 4);  // 2 docs x 2 filters
  CHECK(parsed[2]["filter"] == "strict-match");
  CHECK(parsed[2]["filtered_resps"][0] == "[invalid]");
  CHECK(parsed[3]["filtered_resps"][0] == "1,234.");
  CHECK(parsed[3]["exact_match"] == 1.0);
  CHECK(results_table(r).find("flexible-extract") != std::string::npos);
}

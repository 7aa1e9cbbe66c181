// The harness's context/continuation split on the real LLaMA tokenizer (../shared/models), and the
// token-level scorer. Expected ids: python sentencepiece on the same tokenizer.model with BOS
// prepended (what LLaMA's Hugging Face tokenizer does with add_special_tokens=True), after moving
// the context's trailing whitespace into the continuation:
//   whole = [1] + sp.encode(ctx + cont); ctx_ids = [1] + sp.encode(ctx); cont_ids = whole[len(ctx_ids):]
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "eval/evaluator.h"
#include "eval/scorer.h"
#include "llama/tokenizer.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using namespace mlr::eval;

namespace {

const fs::path kTokenizer = fs::path(MLR_SOURCE_DIR) / ".." / "shared" / "models" / "llama-tokenizer";

bool tokenizer_present() {
  if (fs::exists(kTokenizer / "tokenizer.model")) return true;
  return false;
}

using Ids = std::vector<int32_t>;

}  // namespace

TEST_CASE("move_trailing_whitespace uses Python's str.rstrip") {
  auto [c1, k1] = move_trailing_whitespace("Answer: ", "B");
  CHECK(c1 == "Answer:");
  CHECK(k1 == " B");
  auto [c2, k2] = move_trailing_whitespace("x \n\t", "y");
  CHECK(c2 == "x");
  CHECK(k2 == " \n\ty");
  auto [c3, k3] = move_trailing_whitespace("x\xc2\xa0", "y");  // U+00A0 is whitespace to Python
  CHECK(c3 == "x");
  CHECK(k3 == "\xc2\xa0y");
  auto [c4, k4] = move_trailing_whitespace("therefore", "  water");
  CHECK(c4 == "therefore");
  CHECK(k4 == "  water");
}

TEST_CASE("encode_pair on the LLaMA tokenizer matches the harness's split" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  const auto tok = mlr::load_tokenizer(kTokenizer.string());
  struct Case {
    std::string context, continuation;
    Ids context_ids, continuation_ids;
  };
  const std::vector<Case> cases{
      {"The man turned on the faucet therefore", "  water flowed from the spout.",
       {1, 450, 767, 6077, 373, 278, 285, 14766, 300, 5480}, {29871, 4094, 4972, 287, 515, 278, 805, 449, 29889}},
      {"Question: Is the sky blue?\nAnswer:", " yes", {1, 894, 29901, 1317, 278, 14744, 7254, 29973, 13, 22550, 29901}, {4874}},
      {"Answer: ", "B", {1, 673, 29901}, {350}},
      {"Sentence 1: Caf\xc3\xa9  \n", "na\xc3\xafve r\xc3\xa9sum\xc3\xa9", {1, 28048, 663, 29871, 29896, 29901, 315, 28059},
       {259, 13, 1056, 30085, 345, 6896, 398, 29948}},
      {"A. 0\nB. 1\nAnswer:", " A", {1, 319, 29889, 29871, 29900, 13, 29933, 29889, 29871, 29896, 13, 22550, 29901}, {319}},
  };
  for (const auto& c : cases) {
    CAPTURE(c.context);
    const EncodedPair with_bos = encode_pair(*tok, c.context, c.continuation);
    CHECK(with_bos.context == c.context_ids);
    CHECK(with_bos.continuation == c.continuation_ids);
    // add_special_tokens=false (harness v0.4.2-v0.4.9.1 for LLaMA): the same split without BOS.
    const EncodedPair no_bos = encode_pair(*tok, c.context, c.continuation, {.add_special_tokens = false});
    CHECK(no_bos.context == Ids(c.context_ids.begin() + 1, c.context_ids.end()));
    CHECK(no_bos.continuation == c.continuation_ids);
  }
  // Text that already starts with "<s>" gets no second BOS.
  CHECK(harness_encode(*tok, "<s>Hi", true).front() != 1);
  CHECK(harness_encode(*tok, "Hi", true).front() == 1);
  // Empty context: [BOS] conditions the continuation, which is encoded without special tokens.
  const EncodedPair empty = encode_pair(*tok, "", "Hello");
  CHECK(empty.context == Ids{1});
  CHECK(empty.continuation == tok->encode("Hello", false));
}

TEST_CASE("TokenizedScorer: sums continuation log-probs, greedy flag, left truncation" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  const auto tok = mlr::load_tokenizer(kTokenizer.string());
  const int32_t vocab = tok->vocab_size();
  // An "oracle" model over a known token sequence: at each position it puts log-prob -0.25 on the
  // token that follows in `script` and spreads the rest uniformly; it records every input it sees.
  std::vector<int32_t> script;
  std::vector<std::vector<int32_t>> inputs_seen;
  auto rows_for = [&](const std::vector<int32_t>& input) {
    inputs_seen.push_back(input);
    std::vector<std::vector<float>> rows;
    const float rest = std::log((1.0f - std::exp(-0.25f)) / static_cast<float>(vocab - 1));
    for (size_t t = 0; t < input.size(); ++t) {
      std::vector<float> row(static_cast<size_t>(vocab), rest);
      // Positions align with the end of the script (inputs may be left-truncated).
      const size_t offset = script.size() - 1 - input.size();
      row[static_cast<size_t>(script[offset + t + 1])] = -0.25f;
      rows.push_back(std::move(row));
    }
    return rows;
  };
  LogprobFunctionModel model(rows_for, 2048);
  TokenizedScorer scorer(*tok, model, "oracle");
  const LoglikelihoodRequest request{"Question: Is the sky blue?\nAnswer:", " yes"};
  const TokenSequenceRequest tr = scorer.token_request(request);
  CHECK(tr.n_continuation == 1);
  script = tr.tokens;
  const auto results = scorer.loglikelihood({request});
  REQUIRE(results.size() == 1);
  CHECK(results[0].logprob == doctest::Approx(-0.25));
  CHECK(results[0].is_greedy);
  CHECK(inputs_seen.back() == std::vector<int32_t>(script.begin(), script.end() - 1));
  // Another continuation scored against the same oracle script is neither likely nor greedy.
  const auto other = scorer.loglikelihood({{"Question: Is the sky blue?\nAnswer:", " no"}});
  CHECK(other[0].logprob < -5.0);
  CHECK(!other[0].is_greedy);

  // max_length 4: the model reads (ctx + cont)[-5:][:-1]; BOS is cut off and not re-inserted.
  LogprobFunctionModel short_model(rows_for, 4);
  TokenizedScorer short_scorer(*tok, short_model, "oracle");
  const auto cut = short_scorer.token_request({"The man turned on the faucet therefore", "  water flowed"});
  REQUIRE(cut.tokens.size() == 5);
  CHECK(cut.tokens.front() != 1);
  // A continuation longer than max_length is an error, as the harness asserts.
  CHECK_THROWS_AS(short_scorer.token_request({"Hi", " water flowed from the spout and more words"}), mlr::Error);
}

TEST_CASE("TokenizedScorer::generate_until: greedy, stops and cuts at the stop string" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  const auto tok = mlr::load_tokenizer(kTokenizer.string());
  const int32_t vocab = tok->vocab_size();
  const std::string context = "Question: 6 times 7?\nAnswer:";
  const std::vector<int32_t> answer = tok->encode(" 42\n\nQuestion: what else", false);
  const size_t n_context = tok->encode(context, true).size();
  int64_t calls = 0;
  auto rows_for = [&](const std::vector<int32_t>& input) {
    ++calls;
    std::vector<std::vector<float>> rows(input.size(), std::vector<float>(static_cast<size_t>(vocab), -20.0f));
    const size_t generated = input.size() - n_context;
    rows.back()[static_cast<size_t>(generated < answer.size() ? answer[generated] : 2)] = 0.0f;
    return rows;
  };
  LogprobFunctionModel model(rows_for, 2048);
  TokenizedScorer scorer(*tok, model, "oracle");
  const auto out = scorer.generate_until({{context, {"Question:"}, 64}});
  REQUIRE(out.size() == 1);
  CHECK(out[0] == " 42\n\n");
  // It stopped soon after "Question:" appeared, not at max_gen_toks.
  CHECK(calls < static_cast<int64_t>(answer.size()) + 1);
  // Without a stop string it runs to EOS (id 2), which decoding drops.
  calls = 0;
  const auto to_eos = scorer.generate_until({{context, {}, 64}});
  CHECK(to_eos[0] == " 42\n\nQuestion: what else");
  CHECK(calls == static_cast<int64_t>(answer.size()) + 1);
}

TEST_CASE("evaluate through TokenizedScorer: a function model on the tok512 tokenizer, BoolQ docs" *
          mlr_test::needs_external) {
  const fs::path tok512 = fs::path(MLR_SOURCE_DIR) / ".." / "shared" / "models" / "stories260K" / "tok512.model";
  const fs::path boolq = fs::path(MLR_SOURCE_DIR) / ".." / "shared" / "data" / "boolq" / "val.jsonl";
  MLR_SKIP_UNLESS(fs::exists(tok512) && fs::exists(boolq), "../shared/models/stories260K or ../shared/data/boolq is absent");
  const auto tok = mlr::load_tokenizer(tok512.string());
  const int32_t vocab = tok->vocab_size();
  // log_softmax of logits[v] = 2 sin(0.37 v + 0.11 x_t) at each position t.
  auto rows_for = [vocab](const std::vector<int32_t>& input) {
    std::vector<std::vector<float>> rows;
    for (int32_t x : input) {
      std::vector<double> logits(static_cast<size_t>(vocab));
      double max = -1e30, sum = 0.0;
      for (int32_t v = 0; v < vocab; ++v) {
        logits[static_cast<size_t>(v)] = 2.0 * std::sin(0.37 * v + 0.11 * x);
        max = std::max(max, logits[static_cast<size_t>(v)]);
      }
      for (double l : logits) sum += std::exp(l - max);
      std::vector<float> row;
      for (double l : logits) row.push_back(static_cast<float>(l - max - std::log(sum)));
      rows.push_back(std::move(row));
    }
    return rows;
  };
  LogprobFunctionModel model(rows_for, 512);
  TokenizedScorer scorer(*tok, model, "sin-model");
  const Task task = load_task("boolq", boolq);
  EvalOptions options;
  options.limit = 3;
  options.log_samples = true;
  const EvalResults r = evaluate({task}, {}, scorer, options);
  REQUIRE(r.tasks[0].samples.size() == 3);
  for (const auto& s : r.tasks[0].samples) {
    for (size_t c = 0; c < 2; ++c) {
      // Recompute by hand: split, left-truncate to 513 tokens, sum the continuation's rows.
      const EncodedPair pair = encode_pair(*tok, s.requests[c].context, s.requests[c].continuation);
      std::vector<int32_t> all = pair.context;
      all.insert(all.end(), pair.continuation.begin(), pair.continuation.end());
      if (all.size() > 513) all.erase(all.begin(), all.end() - 513);
      const std::vector<int32_t> input(all.begin(), all.end() - 1);
      const auto rows = rows_for(input);
      double ll = 0.0;
      for (size_t j = 0; j < pair.continuation.size(); ++j) {
        ll += rows[input.size() - pair.continuation.size() + j][static_cast<size_t>(pair.continuation[j])];
      }
      CHECK(s.results[c].logprob == doctest::Approx(ll).epsilon(1e-9));
      CHECK(s.requests[c].continuation == (c == 0 ? " no" : " yes"));
    }
  }
  CHECK(r.tasks[0].n_effective == 3);
}

TEST_CASE("TokenizedScorer: threaded tokenization with the per-doc context cache changes no token" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(tokenizer_present(), "../shared/models/llama-tokenizer is absent");
  const auto tok = mlr::load_tokenizer(kTokenizer.string());
  struct Recorder : ContinuationModel {
    std::vector<TokenSequenceRequest> seen;
    int64_t max_length() const override { return 64; }
    std::vector<LoglikelihoodResult> score(const std::vector<TokenSequenceRequest>& r) override {
      seen = r;
      return std::vector<LoglikelihoodResult>(r.size());
    }
    int32_t greedy_next_token(const std::vector<int32_t>&) override { return 0; }
  } model;
  // 100 "docs" of 3 choices each, contexts of varied lengths (some beyond max_length: truncated).
  std::vector<LoglikelihoodRequest> requests;
  for (int d = 0; d < 100; ++d) {
    std::string context = "Doc " + std::to_string(d) + ":";
    for (int w = 0; w < d % 37; ++w) context += " word" + std::to_string(w * d % 11);
    context += d % 3 == 0 ? "\nAnswer: " : "\nAnswer:";
    for (const char* choice : {" yes", " no", " Neither"}) requests.push_back({context, choice});
  }
  TokenizedScorer threaded(*tok, model, "recorder", {}, 4);
  threaded.loglikelihood(requests);
  REQUIRE(model.seen.size() == requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    CAPTURE(i);
    const TokenSequenceRequest expected = threaded.token_request(requests[i]);  // uncached, this thread
    CHECK(model.seen[i].tokens == expected.tokens);
    CHECK(model.seen[i].n_continuation == expected.n_continuation);
    CHECK(static_cast<int64_t>(model.seen[i].tokens.size()) <= 65);
  }
  // An error in a worker thread reaches the caller.
  requests.push_back({"x", ""});
  CHECK_THROWS_AS(threaded.loglikelihood(requests), mlr::Error);
}

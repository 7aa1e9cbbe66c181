// The LLaMA scorer: batched, length-sorted, right-padded scoring and shared-prefix scoring give the
// same log-likelihoods as scoring each request alone (f32, 1e-5 relative), greedy flags agree, and
// greedy decoding through the KV cache picks the same tokens as re-running the whole sequence.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/grad_mode.h"
#include "eval/llama_scorer.h"
#include "llama/tokenizer.h"
#include "tensor/error.h"
#include "tensor/ops.h"

using namespace mlr;
using namespace mlr::eval;

namespace {

const std::string kDemoDir = std::string(MLR_SOURCE_DIR) + "/configs/demo/model";

// The reference: every input alone through the plain forward pass (positions 0..n-1).
LogprobFunctionModel single_model(LlamaForCausalLM& model, int64_t max_length) {
  return LogprobFunctionModel(
      [&model](const std::vector<int32_t>& input) {
        NoGradGuard no_grad;
        std::vector<int64_t> ids(input.begin(), input.end());
        LlamaBatch b;
        b.input_ids = from_vector<int64_t>(ids, {1, static_cast<int64_t>(ids.size())});
        const Tensor lp = log_softmax(model.forward(b).logits.data().select(0, 0), -1).contiguous();
        const int64_t v = lp.size(1);
        const std::vector<float> flat = lp.to_vector<float>();
        std::vector<std::vector<float>> rows;
        for (size_t i = 0; i < ids.size(); ++i) rows.emplace_back(flat.begin() + i * v, flat.begin() + (i + 1) * v);
        return rows;
      },
      max_length);
}

void check_equal(const std::vector<LoglikelihoodResult>& got, const std::vector<LoglikelihoodResult>& expected) {
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(std::isfinite(got[i].logprob));
    CHECK(got[i].logprob < 0);
    CHECK(got[i].logprob == doctest::Approx(expected[i].logprob).epsilon(1e-5));
    CHECK(got[i].is_greedy == expected[i].is_greedy);
  }
}

// MMLU-style 5-shot prompts: one description and five solved examples shared by every question,
// four single-token choices per question.
std::vector<LoglikelihoodRequest> mmlu_style_requests(int questions) {
  std::string fewshot = "The following are multiple choice questions (with answers) about astronomy.\n\n";
  for (int e = 0; e < 5; ++e) {
    fewshot += fmt::format("What is {} times {}?\nA. {}\nB. {}\nC. {}\nD. {}\nAnswer: {}\n\n", e + 2, e + 3,
                           (e + 2) * (e + 3), e + 5, e * 7 + 1, e + 11, "ABCD"[e % 4]);
  }
  std::vector<LoglikelihoodRequest> requests;
  for (int q = 0; q < questions; ++q) {
    const std::string context = fewshot + fmt::format("Which planet is number {} from the sun?\nA. Mars\nB. Venus\n"
                                                      "C. Earth\nD. Saturn {}\nAnswer:", q + 1, q * q);
    for (const char* choice : {" A", " B", " C", " D"}) requests.push_back({context, choice});
  }
  return requests;
}

}  // namespace

TEST_CASE("LlamaContinuationModel: batched scoring equals one request at a time") {
  auto model = LlamaForCausalLM::from_pretrained(kDemoDir, DType::f32);
  const auto tokenizer = load_tokenizer(kDemoDir);
  LlamaContinuationModel batched(*model, 0, /*batch_tokens=*/40, SharedPrefixOptions{.enabled = false});
  auto single = single_model(*model, batched.max_length());
  TokenizedScorer a(*tokenizer, batched, "batched"), b(*tokenizer, single, "single");
  const std::vector<LoglikelihoodRequest> requests = {
      {"Question: is the sky blue?\nAnswer:", " yes"},
      {"Question: is the sky blue?\nAnswer:", " no"},
      {"The capital of France is", " Paris, a city on the Seine"},
      {"2 + 2 =", " 4"},
      {"A much longer context that goes on for a while so that padding matters in the batch, really", " end"},
  };
  check_equal(a.loglikelihood(requests), b.loglikelihood(requests));
  CHECK(batched.forward_passes() > 1);
  CHECK(batched.counters().padded_tokens >= batched.counters().tokens);
  // Greedy next token agrees with the unbatched argmax.
  const std::vector<int32_t> ctx = tokenizer->encode("The capital of France is");
  CHECK(batched.greedy_next_token(ctx) == single.greedy_next_token(ctx));
}

TEST_CASE("LlamaContinuationModel: shared-prefix scoring equals one request at a time") {
  auto model = LlamaForCausalLM::from_pretrained(kDemoDir, DType::f32);
  const auto tokenizer = load_tokenizer(kDemoDir);
  const std::string passage =
      "Persian language -- Persian is one of the Western Iranian languages within the Indo-Iranian branch of the "
      "Indo-European language family. It is primarily spoken in Iran, Afghanistan and Tajikistan.";
  std::vector<LoglikelihoodRequest> boolq;  // two choices, and two questions on one passage
  for (const char* question : {"do iran and afghanistan speak the same language", "is persian an indo-european language"}) {
    for (const char* choice : {" no", " yes"}) boolq.push_back({passage + "\nQuestion: " + question + "?\nAnswer:", choice});
  }
  const std::vector<LoglikelihoodRequest> uneven = {
      // Continuations of different lengths after one context; the second's input extends the first's.
      {"A story about a cat who liked to sleep in the sun. The cat", " slept"},
      {"A story about a cat who liked to sleep in the sun. The cat", " slept all day"},
      {"A story about a cat who liked to sleep in the sun. The cat", " ran away from home and never came back"},
      {"A story about a cat who liked to sleep in the sun. The cat", " was orange"},
      {"Unrelated", " text"},
  };

  struct Case {
    std::string name;
    std::vector<LoglikelihoodRequest> requests;
    int64_t max_length, batch_tokens, min_tokens;
    bool saves = true;  // the inputs share a prefix worth running once
  };
  std::vector<Case> cases = {
      {"mmlu 5-shot", mmlu_style_requests(6), 0, 16384, 16},
      {"mmlu 5-shot, small batches", mmlu_style_requests(6), 0, 700, 16},
      {"boolq", boolq, 0, 16384, 16},
      {"uneven continuations", uneven, 0, 16384, 1},
      {"uneven continuations, one row per batch", uneven, 0, 1, 1},
      // Left truncation: contexts far longer than max_length lose their start (and so their shared
      // prefix shifts: the truncated inputs are what is compared).
      {"left-truncated mmlu", mmlu_style_requests(4), 48, 16384, 4, false},
      {"left-truncated boolq", boolq, 40, 16384, 4, false},
      {"left-truncated uneven continuations", uneven, 20, 16384, 1, false},
  };
  for (const auto& c : cases) {
    CAPTURE(c.name);
    LlamaContinuationModel shared(*model, c.max_length, c.batch_tokens, SharedPrefixOptions{true, c.min_tokens});
    LlamaContinuationModel plain(*model, c.max_length, c.batch_tokens, SharedPrefixOptions{.enabled = false});
    auto single = single_model(*model, shared.max_length());
    TokenizedScorer s(*tokenizer, shared, "shared"), p(*tokenizer, plain, "plain"), one(*tokenizer, single, "one");
    const auto expected = one.loglikelihood(c.requests);
    check_equal(s.loglikelihood(c.requests), expected);
    check_equal(p.loglikelihood(c.requests), expected);
    if (c.saves) CHECK(shared.counters().tokens < plain.counters().tokens);
    CHECK(shared.counters().tokens <= plain.counters().tokens);
  }

  // The saving on MMLU: the few-shot prefix runs once for all questions, and each question's four
  // choices read one input, so the shared path runs about 1/4 of one question's prompt per question.
  LlamaContinuationModel shared(*model);
  LlamaContinuationModel plain(*model, 0, 16384, SharedPrefixOptions{.enabled = false});
  TokenizedScorer s(*tokenizer, shared, "shared"), p(*tokenizer, plain, "plain");
  const auto requests = mmlu_style_requests(8);
  check_equal(s.loglikelihood(requests), p.loglikelihood(requests));
  int64_t all_tokens = 0;
  for (const auto& r : requests) all_tokens += static_cast<int64_t>(s.token_request(r).tokens.size()) - 1;
  CHECK(plain.counters().tokens == all_tokens);
  LlamaContinuationModel dedup(*model, 0, 16384, SharedPrefixOptions{true, INT64_MAX});
  TokenizedScorer d(*tokenizer, dedup, "dedup");
  check_equal(d.loglikelihood(requests), p.loglikelihood(requests));
  CHECK(dedup.counters().tokens == all_tokens / 4);  // one row per question, nothing shared
  CHECK(shared.counters().tokens * 3 < plain.counters().tokens);
  CHECK(shared.counters().forward_passes == 2);  // one prefix pass, one batch of suffixes
}

TEST_CASE("LlamaContinuationModel: token-level edge cases of the shared path") {
  auto model = LlamaForCausalLM::from_pretrained(kDemoDir, DType::f32);
  LlamaContinuationModel shared(*model, 0, 16384, SharedPrefixOptions{true, 1});
  LlamaContinuationModel plain(*model, 0, 16384, SharedPrefixOptions{.enabled = false});
  std::vector<int32_t> base;
  for (int32_t k = 0; k < 30; ++k) base.push_back((k * 37 + 11) % 600);
  auto extend = [&](std::vector<int32_t> extra) {
    std::vector<int32_t> t = base;
    t.insert(t.end(), extra.begin(), extra.end());
    return t;
  };
  const std::vector<TokenSequenceRequest> requests = {
      {extend({5}), 1},
      {extend({5, 9}), 2},            // its input is the first's input plus one token
      {extend({5, 9}), 1},            // same input as the previous, fewer scored tokens
      {extend({7, 8, 9, 10}), 4},     // scored positions start inside the others' inputs
      {extend({7, 8, 9, 10}), 30},    // every token but the first is scored
      {std::vector<int32_t>{3, 4}, 1},  // nothing shared
  };
  check_equal(shared.score(requests), plain.score(requests));
  CHECK(shared.counters().tokens < plain.counters().tokens);

  CHECK_THROWS_AS(shared.score({{std::vector<int32_t>{1, 2, 3}, 0}}), Error);
  CHECK_THROWS_AS(shared.score({{std::vector<int32_t>{1}, 1}}), Error);
  LlamaContinuationModel short_window(*model, 4);
  CHECK_THROWS_AS(short_window.score({{extend({1, 2, 3, 4, 5}), 5}}), Error);
  CHECK_THROWS_AS(shared.score({{extend({700}), 1}}), Error);  // outside the vocabulary of 602
}

TEST_CASE("LlamaContinuationModel: greedy decoding through the KV cache equals full recomputation") {
  auto model = LlamaForCausalLM::from_pretrained(kDemoDir, DType::f32);
  const auto tokenizer = load_tokenizer(kDemoDir);
  LlamaContinuationModel cached(*model);
  auto single = single_model(*model, cached.max_length());
  TokenizedScorer a(*tokenizer, cached, "cached"), b(*tokenizer, single, "full");
  std::vector<GenerationRequest> requests = {
      {"Question: Natalia sold clips to 48 of her friends in April. How many clips did she sell?\nAnswer:",
       {"\n\n", "Question:"}, 24},
      {"The capital of France is", {}, 40},
      {"Once upon a time", {"."}, 16},
  };
  const auto got = a.generate_until(requests);
  CHECK(got == b.generate_until(requests));
  // One pass per generated token, but each pass after the first runs one token.
  int64_t generated = 0, context = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    generated += static_cast<int64_t>(tokenizer->encode(got[i], false).size());
    context += static_cast<int64_t>(tokenizer->encode(requests[i].context).size());
  }
  CHECK(cached.counters().tokens < context + 2 * generated + 8);

  // A window that slides (left truncation) restarts the cache and still matches.
  LlamaContinuationModel narrow(*model, 40);
  auto narrow_single = single_model(*model, 40);
  std::vector<int32_t> tokens = tokenizer->encode(
      "A long sentence that is longer than forty tokens once it is encoded, since it goes on and on about nothing");
  REQUIRE(tokens.size() > 40);
  for (int step = 0; step < 5; ++step) {
    const int32_t next = narrow.greedy_next_token(tokens);
    // The old behaviour: the whole window of the last 40 tokens at positions 0..39.
    CHECK(next == narrow_single.greedy_next_token(std::vector<int32_t>(tokens.end() - 40, tokens.end())));
    tokens.push_back(next);
  }
  // A sequence that does not extend the cached one.
  const std::vector<int32_t> other = tokenizer->encode("Something else");
  CHECK(narrow.greedy_next_token(other) == narrow_single.greedy_next_token(other));
}

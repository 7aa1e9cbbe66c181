// The LLaMA scorer: batched, length-sorted, right-padded scoring gives the same log-likelihoods as
// scoring each request alone, and greedy flags agree.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/grad_mode.h"
#include "eval/llama_scorer.h"
#include "llama/tokenizer.h"
#include "tensor/ops.h"

using namespace mlr;
using namespace mlr::eval;

TEST_CASE("LlamaContinuationModel: batched scoring equals one request at a time") {
  const std::string dir = std::string(MLR_SOURCE_DIR) + "/configs/demo/model";
  auto model = LlamaForCausalLM::from_pretrained(dir, DType::f32);
  const auto tokenizer = load_tokenizer(dir);
  LlamaContinuationModel batched(*model, 0, /*batch_tokens=*/40);  // forces several batches
  LogprobFunctionModel single(
      [&](const std::vector<int32_t>& input) {
        NoGradGuard no_grad;
        std::vector<int64_t> ids(input.begin(), input.end());
        LlamaBatch b;
        b.input_ids = from_vector<int64_t>(ids, {1, static_cast<int64_t>(ids.size())});
        const Tensor lp = log_softmax(model->forward(b).logits.data().select(0, 0), -1).contiguous();
        const int64_t v = lp.size(1);
        const std::vector<float> flat = lp.to_vector<float>();
        std::vector<std::vector<float>> rows;
        for (size_t i = 0; i < ids.size(); ++i) rows.emplace_back(flat.begin() + i * v, flat.begin() + (i + 1) * v);
        return rows;
      },
      batched.max_length());
  TokenizedScorer a(*tokenizer, batched, "batched"), b(*tokenizer, single, "single");
  const std::vector<LoglikelihoodRequest> requests = {
      {"Question: is the sky blue?\nAnswer:", " yes"},
      {"Question: is the sky blue?\nAnswer:", " no"},
      {"The capital of France is", " Paris, a city on the Seine"},
      {"2 + 2 =", " 4"},
      {"A much longer context that goes on for a while so that padding matters in the batch, really", " end"},
  };
  const auto ra = a.loglikelihood(requests);
  const auto rb = b.loglikelihood(requests);
  REQUIRE(ra.size() == requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    CAPTURE(i);
    CHECK(std::isfinite(ra[i].logprob));
    CHECK(ra[i].logprob < 0);
    CHECK(ra[i].logprob == doctest::Approx(rb[i].logprob).epsilon(1e-5));
    CHECK(ra[i].is_greedy == rb[i].is_greedy);
  }
  CHECK(batched.forward_passes() > 1);
  // Greedy next token agrees with the unbatched argmax.
  const std::vector<int32_t> ctx = tokenizer->encode("The capital of France is");
  CHECK(batched.greedy_next_token(ctx) == single.greedy_next_token(ctx));
}

// LlamaContinuationModel: batched continuation scoring with a LLaMA model (see llama_scorer.h).
#include "eval/llama_scorer.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "autograd/grad_mode.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr::eval {

LlamaContinuationModel::LlamaContinuationModel(LlamaForCausalLM& model, int64_t max_length, int64_t batch_tokens)
    : model_(model),
      max_length_(max_length > 0 ? max_length : model.config().max_position_embeddings),
      batch_tokens_(batch_tokens) {
  MLR_CHECK(max_length_ > 0, "eval: max_length must be positive, got {}", max_length_);
  MLR_CHECK(batch_tokens_ > 0, "eval: batch_tokens must be positive, got {}", batch_tokens_);
}

std::vector<LoglikelihoodResult> LlamaContinuationModel::score(const std::vector<TokenSequenceRequest>& requests) {
  NoGradGuard no_grad;
  model_.eval();
  const Device device = model_.named_parameters().front().second.device();
  std::vector<LoglikelihoodResult> results(requests.size());
  // Model inputs: tokens[:-1], at most max_length of them (left-truncated).
  std::vector<std::vector<int32_t>> inputs(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& t = requests[i].tokens;
    MLR_CHECK(t.size() >= 2 && requests[i].n_continuation >= 1 &&
                  requests[i].n_continuation <= static_cast<int64_t>(t.size()) - 1,
              "eval: request {} has {} tokens and {} continuation tokens (need a context token before them)", i,
              t.size(), requests[i].n_continuation);
    const size_t n = std::min<size_t>(t.size() - 1, static_cast<size_t>(max_length_));
    inputs[i].assign(t.end() - 1 - static_cast<std::ptrdiff_t>(n), t.end() - 1);
  }
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return inputs[a].size() > inputs[b].size(); });

  size_t start = 0;
  while (start < order.size()) {
    const int64_t len = static_cast<int64_t>(inputs[order[start]].size());  // longest of the batch
    const int64_t rows = std::max<int64_t>(1, std::min<int64_t>(batch_tokens_ / std::max<int64_t>(len, 1),
                                                                static_cast<int64_t>(order.size() - start)));
    std::vector<int64_t> ids(rows * len, 0), mask(rows * len, 0);
    for (int64_t r = 0; r < rows; ++r) {
      const auto& in = inputs[order[start + r]];
      for (size_t k = 0; k < in.size(); ++k) {
        ids[r * len + k] = in[k];
        mask[r * len + k] = 1;
      }
    }
    LlamaBatch batch;
    batch.input_ids = from_vector<int64_t>(ids, {rows, len}).to(device);
    batch.attention_mask = from_vector<int64_t>(mask, {rows, len}).to(device);
    const Tensor logits = model_.forward(batch).logits.data();  // [rows, len, V]
    ++forward_passes_;
    for (int64_t r = 0; r < rows; ++r) {
      const size_t i = order[start + r];
      const int64_t n_in = static_cast<int64_t>(inputs[i].size()), n_cont = requests[i].n_continuation;
      // Positions n_in - n_cont .. n_in - 1 predict the continuation tokens.
      const Tensor rows_logits = logits.select(0, r).narrow(0, n_in - n_cont, n_cont).to(Device::cpu(), DType::f32);
      const Tensor logp = log_softmax(rows_logits, -1);
      const Tensor best = argmax(rows_logits, -1);
      const std::vector<float> lp = logp.contiguous().to_vector<float>();
      const std::vector<int64_t> am = best.to_vector<int64_t>();
      const int64_t vocab = rows_logits.size(1);
      const auto& t = requests[i].tokens;
      double sum = 0;
      bool greedy = true;
      for (int64_t k = 0; k < n_cont; ++k) {
        const int32_t target = t[t.size() - static_cast<size_t>(n_cont) + static_cast<size_t>(k)];
        MLR_CHECK(target >= 0 && target < vocab, "eval: token {} is outside the model's vocabulary of {}", target, vocab);
        sum += lp[k * vocab + target];
        greedy = greedy && am[k] == target;
      }
      results[i] = {sum, greedy};
    }
    start += static_cast<size_t>(rows);
  }
  return results;
}

int32_t LlamaContinuationModel::greedy_next_token(const std::vector<int32_t>& tokens) {
  MLR_CHECK(!tokens.empty(), "eval: greedy_next_token needs at least one token");
  NoGradGuard no_grad;
  model_.eval();
  const Device device = model_.named_parameters().front().second.device();
  const size_t n = std::min<size_t>(tokens.size(), static_cast<size_t>(max_length_));
  std::vector<int64_t> ids(tokens.end() - static_cast<std::ptrdiff_t>(n), tokens.end());
  LlamaBatch batch;
  batch.input_ids = from_vector<int64_t>(ids, {1, static_cast<int64_t>(n)}).to(device);
  const Tensor logits = model_.forward(batch).logits.data();
  ++forward_passes_;
  const Tensor last = logits.select(0, 0).select(0, static_cast<int64_t>(n) - 1).to(Device::cpu(), DType::f32);
  return static_cast<int32_t>(argmax(last, 0).item<int64_t>());
}

}  // namespace mlr::eval

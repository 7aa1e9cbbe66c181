// What the sharded-base tests compare between a model and its sharded twin: one forward and
// backward on a fixed batch of token ids < 61 (`pass` shifts them), and bitwise equality.
#pragma once

#include <vector>

#include "llama/model.h"

namespace mlr::test {

// Loss, logits and every trainable gradient (set to none first) of one forward and backward.
inline std::vector<Tensor> training_outputs(LlamaForCausalLM& model, int pass = 0) {
  for (auto [name, p] : model.named_parameters(true)) p.zero_grad(/*set_to_none=*/true);
  LlamaBatch batch;
  std::vector<int64_t> ids(2 * 20);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 29 + 7 + 13 * pass) % 61);
  batch.input_ids = from_vector(ids, {2, 20});
  batch.labels = batch.input_ids;
  CausalLMOutput out = model.forward(batch);
  out.loss.backward();
  std::vector<Tensor> result = {out.loss.data().clone(), out.logits.data().clone()};
  for (const auto& [name, p] : model.named_parameters(true)) result.push_back(p.grad().clone());
  return result;
}

// Same shape and every element equal (compared as f64, exact for every floating dtype).
inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace mlr::test

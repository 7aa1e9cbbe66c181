// LLaMA-family models as evaluation scorers: a ContinuationModel (eval/scorer.h) over
// LlamaForCausalLM, so TokenizedScorer gives the harness's loglikelihood and generate_until for
// base checkpoints, base + adapter (unmerged, any adapter type) and merged checkpoints alike.
//
// Batching (as the harness's HFLM): requests sorted by length, longest first, packed into batches
// of at most `batch_tokens` padded tokens; each batch is one right-padded forward pass without
// gradients. Only the continuation positions' logits are read back, and log-softmax is taken over
// the vocabulary in f32. Results come back in request order.
#pragma once

#include <cstdint>
#include <vector>

#include "eval/scorer.h"
#include "llama/model.h"

namespace mlr::eval {

class LlamaContinuationModel : public ContinuationModel {
 public:
  // max_length 0: the model's max_position_embeddings.
  explicit LlamaContinuationModel(LlamaForCausalLM& model, int64_t max_length = 0, int64_t batch_tokens = 16384);
  int64_t max_length() const override { return max_length_; }
  std::vector<LoglikelihoodResult> score(const std::vector<TokenSequenceRequest>& requests) override;
  int32_t greedy_next_token(const std::vector<int32_t>& tokens) override;

  int64_t forward_passes() const { return forward_passes_; }

 private:
  LlamaForCausalLM& model_;
  int64_t max_length_;
  int64_t batch_tokens_;
  int64_t forward_passes_ = 0;
};

}  // namespace mlr::eval

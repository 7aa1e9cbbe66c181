// LLaMA-family models as evaluation scorers: a ContinuationModel (eval/scorer.h) over
// LlamaForCausalLM, so TokenizedScorer gives the harness's loglikelihood and generate_until for
// base checkpoints, base + adapter (unmerged, any adapter type) and merged checkpoints alike.
//
// Each request's model input is tokens[:-1], left-truncated to max_length; the logits at its last
// n_continuation positions score the continuation (log-softmax over the vocabulary in f32).
// Results come back in request order. Two ways to run the inputs, both without gradients:
//
// Plain (as the harness's HFLM; SharedPrefixOptions::enabled = false): every request's input,
//   sorted by length, longest first, packed into batches of at most `batch_tokens` padded tokens,
//   one right-padded forward pass per batch.
//
// Shared prefix (default): requests are deduplicated by input (all single-token choices of a
//   question read the same input) and the distinct inputs, in lexicographic order, are grouped
//   greedily while they share a prefix: input j joins a group of n inputs with shared prefix p when
//   its common prefix p' with the group (capped so that no scored position falls inside it) saves
//   tokens, n*p' - (n-1)*p > 0, and p' >= min_tokens. A group's prefix runs once into a KV cache
//   (batched over groups, right-padded); then the members' suffixes run against a copy of their
//   group's prefix keys and values (the KV-cache attention of LlamaForCausalLM::forward_cached;
//   rows of different groups batch together: each row's padded prefix positions are masked out,
//   and its rotary positions continue from its own prefix length). So all choices of a question share its context, and all
//   questions of an MMLU subject share the few-shot examples. Every position sees exactly the keys
//   and values it sees in the plain pass, so results equal the plain path's up to f32 rounding.
//   The output layer runs only at scored positions, on either path. Distinct inputs in no group of
//   two or more take the plain path (min_tokens = INT64_MAX: only the deduplication).
//
// greedy_next_token keeps the keys and values of the last sequence it was called with: when the
// next call's (truncated) tokens extend that sequence, only the new tokens run (forward_cached),
// as in incremental decoding. The cache follows the model's weights at the time they were cached:
// call reset_decode_cache() after changing the weights.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "eval/scorer.h"
#include "llama/model.h"

namespace mlr::eval {

struct SharedPrefixOptions {
  bool enabled = true;      // false: the harness's plain path (no deduplication, no sharing)
  int64_t min_tokens = 16;  // shorter common prefixes are not worth an extra pass
};

// Work done so far, to make the savings of batching and prefix sharing visible.
struct ScorerCounters {
  int64_t forward_passes = 0;  // model calls (prefix, suffix, plain and decoding passes)
  int64_t tokens = 0;          // real (non-padding) tokens run through the model
  int64_t padded_tokens = 0;   // batch rows x sequence length, padding included
};

class LlamaContinuationModel : public ContinuationModel {
 public:
  // max_length 0: the model's max_position_embeddings.
  explicit LlamaContinuationModel(LlamaForCausalLM& model, int64_t max_length = 0, int64_t batch_tokens = 16384,
                                  SharedPrefixOptions shared_prefix = {});
  int64_t max_length() const override { return max_length_; }
  std::vector<LoglikelihoodResult> score(const std::vector<TokenSequenceRequest>& requests) override;
  int32_t greedy_next_token(const std::vector<int32_t>& tokens) override;

  void set_shared_prefix(SharedPrefixOptions options) { shared_prefix_ = options; }
  void reset_decode_cache();
  const ScorerCounters& counters() const { return counters_; }
  void reset_counters() { counters_ = {}; }
  int64_t forward_passes() const { return counters_.forward_passes; }

 private:
  struct Row;  // one distinct model input and the requests that read it
  void score_plain(std::vector<Row*> rows, const std::vector<TokenSequenceRequest>& requests,
                   std::vector<LoglikelihoodResult>& results);
  void score_shared(const std::vector<std::vector<Row*>>& groups, const std::vector<int64_t>& prefix_lengths,
                    const std::vector<TokenSequenceRequest>& requests, std::vector<LoglikelihoodResult>& results);

  LlamaForCausalLM& model_;
  int64_t max_length_;
  int64_t batch_tokens_;
  SharedPrefixOptions shared_prefix_;
  ScorerCounters counters_;
  std::unique_ptr<KVCache> decode_cache_;
  std::vector<int32_t> decode_tokens_;  // the tokens whose keys and values decode_cache_ holds
};

}  // namespace mlr::eval

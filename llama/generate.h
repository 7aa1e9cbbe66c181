// Text generation with a KV cache: batched prompts (left padded), greedy decoding or sampling with
// temperature, top-k and top-p from a seeded Philox generator, stopping on EOS ids or stop strings.
//
// As transformers' generate(): the prompt's positions count real tokens only (left padding does
// not shift them), a row that has finished is filled with pad_token_id, and the logits of each
// step are processed in the order temperature -> top-k -> top-p before sampling:
//   temperature:  l / T
//   top-k:        keep the tokens whose logit is >= the k-th largest (ties kept), others -inf
//   top-p:        sort ascending by probability; drop the tokens whose cumulative probability is
//                 <= 1 - p, never the most likely one
// A sampled token is the inverse CDF of the filtered softmax at one uniform draw per row and step,
// so a run is reproducible from the seed (it does not reproduce torch's random stream).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "llama/model.h"
#include "llama/tokenizer.h"

namespace mlr {

struct GenerationConfig {
  int64_t max_new_tokens = 32;
  bool do_sample = false;  // false: greedy (argmax, the first maximum on ties)
  double temperature = 1.0;
  int64_t top_k = 0;   // 0: no top-k filter
  double top_p = 1.0;  // 1: no top-p filter
  uint64_t seed = 0;
  std::vector<int64_t> eos_token_ids;     // a row stops after producing one of these
  std::vector<std::string> stop_strings;  // a row stops once its decoded continuation contains one
  const Tokenizer* tokenizer = nullptr;   // needed for stop_strings
  int64_t pad_token_id = 0;               // fills rows that have finished
};

enum class FinishReason { length, eos, stop_string };
const char* finish_reason_name(FinishReason reason);

struct GenerationOutput {
  // Per row, the new tokens up to and including the EOS or the token that completed a stop string.
  std::vector<std::vector<int64_t>> tokens;
  std::vector<FinishReason> finish_reasons;
  // [B, steps] i64: the tokens as transformers returns them (pad_token_id after a row finished).
  Tensor output_ids;
};

// input_ids [B, P] (i32/i64) with attention_mask [B, P] (1 real, 0 padding; undefined: no
// padding). Padding must be on the left: every row ends with a real token.
GenerationOutput generate(LlamaForCausalLM& model, const Tensor& input_ids, const Tensor& attention_mask,
                          const GenerationConfig& config);
// Prompts of any lengths, left padded with config.pad_token_id into one batch.
GenerationOutput generate(LlamaForCausalLM& model, const std::vector<std::vector<int64_t>>& prompts,
                          const GenerationConfig& config);

// The sampling distribution for one row of logits after temperature, top-k and top-p (see top).
std::vector<double> sampling_probabilities(const std::vector<float>& logits, double temperature, int64_t top_k,
                                           double top_p);
// The token at uniform draw u in [0, 1) under `probabilities` (inverse CDF in token order).
int64_t sample_from(const std::vector<double>& probabilities, double u);

}  // namespace mlr

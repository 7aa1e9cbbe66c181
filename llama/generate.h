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
#include <functional>
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
  // Called with (row, token) for every new token as soon as it is chosen (streaming output).
  std::function<void(int64_t, int64_t)> on_token;
};

// The ids a checkpoint ends generation on and pads with, as transformers' generate() takes them:
// generation_config.json's eos_token_id (one id or a list) when it has one, else config.json's,
// else the tokenizer's EOS; pad_token_id likewise, falling back to the first EOS id (then 0).
struct CheckpointGenerationIds {
  std::vector<int64_t> eos_token_ids;
  int64_t pad_token_id = 0;
};
CheckpointGenerationIds checkpoint_generation_ids(const std::string& dir, const Tokenizer* tokenizer);

// Turns one row's tokens, as they arrive, into text that is safe to print: each push returns the
// text that the new token completed. Decoding always covers the whole continuation after `context`
// (the prompt's last tokens), so a sentencepiece word-start space or a character split over
// byte-fallback tokens comes out as the whole sequence decodes, never piece by piece. Held back
// until settled: an incomplete UTF-8 character at the end, and a tail that may be the start of a
// stop string. A stop string ends the text before it (the stop string itself is not returned).
// Special tokens (EOS, ...) are not printed.
class IncrementalDecoder {
 public:
  IncrementalDecoder(const Tokenizer& tokenizer, std::vector<int32_t> context, std::vector<std::string> stop_strings);
  std::string push(int64_t token);
  // What is still held back (at the end of generation).
  std::string finish();
  bool stopped() const { return stopped_; }
  // Everything returned so far.
  const std::string& text() const { return emitted_text_; }

 private:
  std::string settle(bool final);

  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  std::string context_text_;
  std::vector<std::string> stop_strings_;
  std::string emitted_text_;
  bool stopped_ = false;
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

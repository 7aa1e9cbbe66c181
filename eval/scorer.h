// The model side of evaluation, as lm-evaluation-harness's HFLM sees it, split in two layers so a
// model plugs in with a small adapter:
//
//   LanguageModelScorer   string level: loglikelihood(context, continuation) and generate_until.
//                         Tasks and the evaluator only talk to this.
//   TokenizedScorer       implements it for any causal LM given a Tokenizer and a
//                         ContinuationModel (token sequences -> sum log p of the continuation
//                         tokens, greedy flag). It owns the harness's string -> token rules:
//
// Context/continuation split (TemplateLM._encode_pair):
//   1. trailing whitespace of the context (Python str.rstrip) moves to the front of the continuation;
//   2. whole = encode(context + continuation), ctx = encode(context), cont = whole[len(ctx):],
//      so the boundary tokens are those of the joint tokenization;
//   3. an empty context becomes [prefix token] (BOS, else EOS) and the continuation is encoded
//      without special tokens; if it already starts with the prefix token, that token is the context.
// BOS: encode(text, add_special_tokens) with add_special_tokens = true by default, i.e. the
//   tokenizer's own rule, which is Hugging Face's default and the harness's since v0.4.9.2 (LLaMA
//   tokenizers prepend BOS). false reproduces harness v0.4.2 to v0.4.9.1 (add_bos_token=False: no
//   BOS for LLaMA). Either way, text that already starts with the BOS piece gets no second BOS.
// Scoring (HFLM._loglikelihood_tokens): tokens = (ctx + cont)[-(max_length + 1):] (left truncation,
//   BOS may be cut off and is not re-inserted); the model reads tokens[:-1] and the last len(cont)
//   positions score the continuation: ll = sum log p(cont_t), is_greedy = every cont_t is the argmax.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "llama/tokenizer.h"

namespace mlr::eval {

struct LoglikelihoodRequest {
  std::string context;
  std::string continuation;
};

struct LoglikelihoodResult {
  double logprob = 0.0;    // sum of the continuation tokens' log-probabilities
  bool is_greedy = false;  // every continuation token is the model's argmax
};

struct GenerationRequest {
  std::string context;
  std::vector<std::string> until;  // stop strings (the model's EOS is added by the scorer)
  int64_t max_gen_toks = 256;
};

class LanguageModelScorer {
 public:
  virtual ~LanguageModelScorer() = default;
  // One result per request, in request order. Implementations may reorder internally (batching).
  virtual std::vector<LoglikelihoodResult> loglikelihood(const std::vector<LoglikelihoodRequest>& requests) = 0;
  // Greedy continuation of each context, cut at the first stop string.
  virtual std::vector<std::string> generate_until(const std::vector<GenerationRequest>& requests) = 0;
  // Recorded in the results' config ("model").
  virtual std::string name() const = 0;
};

// ---- token level ----

struct EncodePairOptions {
  bool add_special_tokens = true;  // see the header comment (BOS)
};

struct EncodedPair {
  std::vector<int32_t> context;
  std::vector<int32_t> continuation;
};

// Step 1 of the split: (context without its trailing whitespace, that whitespace + continuation).
std::pair<std::string, std::string> move_trailing_whitespace(std::string_view context, std::string_view continuation);

// encode(text) as the harness's tok_encode does it (the BOS-prefix rule included).
std::vector<int32_t> harness_encode(const Tokenizer& tokenizer, const std::string& text, bool add_special_tokens);

// Steps 1-3 above.
EncodedPair encode_pair(const Tokenizer& tokenizer, std::string_view context, std::string_view continuation,
                        const EncodePairOptions& options = {});

// One scoring request at the token level: the model reads tokens[:-1] (at most max_length tokens)
// and scores the last n_continuation tokens of `tokens`.
struct TokenSequenceRequest {
  std::vector<int32_t> tokens;
  int64_t n_continuation = 0;
};

class ContinuationModel {
 public:
  virtual ~ContinuationModel() = default;
  virtual int64_t max_length() const = 0;
  virtual std::vector<LoglikelihoodResult> score(const std::vector<TokenSequenceRequest>& requests) = 0;
  // Greedy next token after `tokens` (for generate_until); models without generation may throw.
  virtual int32_t greedy_next_token(const std::vector<int32_t>& tokens) = 0;
};

// A ContinuationModel from a plain function: log_softmax rows (one per input position, each of
// vocabulary size) for an input token sequence. Simple and exact; a real model adapter should
// implement ContinuationModel directly to batch and share the context's forward pass.
class LogprobFunctionModel : public ContinuationModel {
 public:
  using LogprobRows = std::function<std::vector<std::vector<float>>(const std::vector<int32_t>& input)>;
  LogprobFunctionModel(LogprobRows fn, int64_t max_length) : fn_(std::move(fn)), max_length_(max_length) {}
  int64_t max_length() const override { return max_length_; }
  std::vector<LoglikelihoodResult> score(const std::vector<TokenSequenceRequest>& requests) override;
  int32_t greedy_next_token(const std::vector<int32_t>& tokens) override;

 private:
  LogprobRows fn_;
  int64_t max_length_;
};

// Tokenization runs on `threads` threads (0: one per hardware thread) over contiguous slices of the
// requests, and a context shared by consecutive requests (the choices of one doc) is encoded once;
// Tokenizer::encode must therefore be safe to call concurrently (it is const; the sentencepiece and
// BPE tokenizers of llama/ are). Neither changes any token.
class TokenizedScorer : public LanguageModelScorer {
 public:
  TokenizedScorer(const Tokenizer& tokenizer, ContinuationModel& model, std::string name,
                  EncodePairOptions options = {}, int threads = 0)
      : tokenizer_(tokenizer), model_(model), name_(std::move(name)), options_(options), threads_(threads) {}

  // The token request the model receives for one string request (split + left truncation).
  TokenSequenceRequest token_request(const LoglikelihoodRequest& request) const;

  std::vector<LoglikelihoodResult> loglikelihood(const std::vector<LoglikelihoodRequest>& requests) override;
  // Harness rules: context left-truncated to max_length - max_gen_toks tokens; greedy decoding;
  // stop at EOS or when a stop string appears in the decoded tail; output cut at each stop string.
  std::vector<std::string> generate_until(const std::vector<GenerationRequest>& requests) override;
  std::string name() const override { return name_; }

 private:
  const Tokenizer& tokenizer_;
  ContinuationModel& model_;
  std::string name_;
  EncodePairOptions options_;
  int threads_;
};

}  // namespace mlr::eval

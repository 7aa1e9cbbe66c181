// Tokenisation of an Example into ids and a loss mask.
//
// The text is encoded once as a whole (prompt + target, or every turn of a conversation), and the
// prompt/target boundary is placed at the token count of the prompt encoded alone, with its
// trailing whitespace moved to the target: lm-evaluation-harness's _encode_pair rule, so that the
// target tokens seen in training are the continuation tokens scored in evaluation.
// mask[t] = 1 marks a target token (trained on); prompt tokens and BOS have mask 0; EOS, when
// added, belongs to the target. Labels are derived later (packing), so training on the prompt is
// a loader option, not a cache key.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/template.h"
#include "llama/tokenizer.h"

namespace mlr::data {

// Whether to add a special token: as the tokenizer's configuration says (add_bos_token,
// add_eos_token), or always, or never.
enum class Special { as_tokenizer, always, never };
Special parse_special(std::string_view text);  // "auto" | "true" | "false"
std::string_view special_name(Special s);

struct TokenizeOptions {
  Special bos = Special::as_tokenizer;
  Special eos = Special::as_tokenizer;
};

// The options resolved against a tokenizer: whether BOS / EOS are added. Throws when a token is
// asked for that the tokenizer does not have.
struct ResolvedSpecials {
  bool bos = false, eos = false;
  int32_t bos_id = -1, eos_id = -1;
};
ResolvedSpecials resolve_specials(const Tokenizer& tokenizer, const TokenizeOptions& options);

struct TokenizedExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;  // 1 = target token
  // The text was far longer than a row: ids hold its first and its last max_row_tokens tokens or
  // more (the middle was never tokenized), which is all that fit_example with max_tokens <=
  // max_row_tokens can keep, truncating on either side.
  bool windowed = false;
};

// max_row_tokens > 0 bounds the work on huge texts (one 64 MB field): a text more than a few
// times longer than such a row is tokenized in a head and a tail window, cut where the
// tokenization of the whole text splits (checked on the text around the cut), so the tokens any
// row can use are those of the whole text. 0: always the whole text.
TokenizedExample tokenize_example(const Tokenizer& tokenizer, const Example& example, const ResolvedSpecials& specials,
                                  int64_t max_row_tokens = 0);

// Fitting an example into max_tokens (the packed row length). An example that fits is copied as
// it is. A longer one is truncated, and the caller counts it:
//   right  keeps the first max_tokens tokens: the end of the target (and EOS) is lost;
//   left   keeps the leading BOS (when the example starts with one) and the last tokens: the start
//          of the prompt is lost, the target survives (what lm-evaluation-harness does to contexts).
// Either way an example with no target token left cannot be trained on: fit_example reports
// no_target and the caller raises an error naming the example (or drops and counts it).
enum class Truncation { right, left };
Truncation parse_truncation(std::string_view text);  // "right" | "left"
std::string_view truncation_name(Truncation t);

enum class Fit { whole, truncated, no_target };

// Appends the kept tokens of (ids, mask) to out_ids / out_mask; appends nothing for no_target.
// bos_id >= 0 names the BOS token kept by left truncation; -1 when the example has none.
Fit fit_example(std::span<const int32_t> ids, std::span<const uint8_t> mask, int64_t max_tokens, Truncation truncation,
                int32_t bos_id, std::vector<int32_t>& out_ids, std::vector<uint8_t>& out_mask);

}  // namespace mlr::data

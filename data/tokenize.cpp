#include "data/tokenize.h"

#include <algorithm>

#include <fmt/format.h>

#include "data/text.h"
#include "tensor/error.h"

namespace mlr::data {

Special parse_special(std::string_view text) {
  if (text == "auto") return Special::as_tokenizer;
  if (text == "true") return Special::always;
  if (text == "false") return Special::never;
  throw Error(fmt::format("data: '{}' is not a BOS/EOS setting (expected auto, true or false)", text));
}

std::string_view special_name(Special s) {
  switch (s) {
    case Special::as_tokenizer: return "auto";
    case Special::always: return "true";
    case Special::never: return "false";
  }
  return "?";
}

ResolvedSpecials resolve_specials(const Tokenizer& tokenizer, const TokenizeOptions& options) {
  ResolvedSpecials r;
  r.bos = options.bos == Special::always || (options.bos == Special::as_tokenizer && tokenizer.adds_bos());
  r.eos = options.eos == Special::always || (options.eos == Special::as_tokenizer && tokenizer.adds_eos());
  if (r.bos) {
    MLR_CHECK(tokenizer.bos_id().has_value(), "data: bos is on but the tokenizer ({}) has no BOS token",
              tokenizer.fingerprint());
    r.bos_id = *tokenizer.bos_id();
  }
  if (r.eos) {
    MLR_CHECK(tokenizer.eos_id().has_value(), "data: eos is on but the tokenizer ({}) has no EOS token",
              tokenizer.fingerprint());
    r.eos_id = *tokenizer.eos_id();
  }
  return r;
}

TokenizedExample tokenize_example(const Tokenizer& tokenizer, const Example& example, const ResolvedSpecials& specials) {
  // The text as segments; every target segment is trained on.
  struct Segment {
    std::string_view text;
    bool target;
  };
  std::vector<Segment> segments;
  for (const Turn& turn : example.history) {
    segments.push_back({turn.prompt, false});
    segments.push_back({turn.target, true});
  }
  segments.push_back({example.prompt, false});
  segments.push_back({example.target, true});

  std::string full;
  for (const auto& s : segments) full += s.text;
  const std::vector<int32_t> ids = tokenizer.encode(full, false);

  // Token index where each segment starts: the token count of the text before it, encoded alone
  // with its trailing whitespace moved into the segment (lm-evaluation-harness's rule). Clamped to
  // stay monotone when the joint tokenization merges across a boundary.
  std::vector<size_t> bounds = {0};
  size_t char_pos = 0;
  for (size_t k = 0; k + 1 < segments.size(); ++k) {
    char_pos += segments[k].text.size();
    const std::string_view before = rstrip(std::string_view(full).substr(0, char_pos));
    const size_t count = before.empty() ? 0 : tokenizer.encode(std::string(before), false).size();
    bounds.push_back(std::clamp(count, bounds.back(), ids.size()));
  }
  bounds.push_back(ids.size());
  std::vector<uint8_t> mask(ids.size(), 0);
  for (size_t k = 0; k < segments.size(); ++k) {
    if (!segments[k].target) continue;
    std::fill(mask.begin() + static_cast<std::ptrdiff_t>(bounds[k]), mask.begin() + static_cast<std::ptrdiff_t>(bounds[k + 1]), 1);
  }

  TokenizedExample out;
  out.ids.reserve(ids.size() + 2);
  out.mask.reserve(ids.size() + 2);
  if (specials.bos) {
    out.ids.push_back(specials.bos_id);
    out.mask.push_back(0);
  }
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  out.mask.insert(out.mask.end(), mask.begin(), mask.end());
  if (specials.eos) {
    out.ids.push_back(specials.eos_id);
    out.mask.push_back(1);
  }
  return out;
}

Truncation parse_truncation(std::string_view text) {
  if (text == "right") return Truncation::right;
  if (text == "left") return Truncation::left;
  throw Error(fmt::format("data: '{}' is not a truncation side (expected right or left)", text));
}

std::string_view truncation_name(Truncation t) { return t == Truncation::right ? "right" : "left"; }

Fit fit_example(std::span<const int32_t> ids, std::span<const uint8_t> mask, int64_t max_tokens, Truncation truncation,
                int32_t bos_id, std::vector<int32_t>& out_ids, std::vector<uint8_t>& out_mask) {
  MLR_CHECK(max_tokens > 0, "data: fit_example: max_tokens is {}, expected > 0", max_tokens);
  const auto n = static_cast<int64_t>(ids.size());
  const auto append = [&](int64_t begin, int64_t end) {
    out_ids.insert(out_ids.end(), ids.begin() + begin, ids.begin() + end);
    out_mask.insert(out_mask.end(), mask.begin() + begin, mask.begin() + end);
  };
  const auto has_target = [&](int64_t begin, int64_t end) {
    return std::find(mask.begin() + begin, mask.begin() + end, uint8_t{1}) != mask.begin() + end;
  };
  if (n <= max_tokens) {
    append(0, n);
    return Fit::whole;
  }
  if (truncation == Truncation::right) {
    if (!has_target(0, max_tokens)) return Fit::no_target;
    append(0, max_tokens);
    return Fit::truncated;
  }
  const int64_t keep_bos = (bos_id >= 0 && n > 0 && ids[0] == bos_id && max_tokens > 1) ? 1 : 0;
  const int64_t begin = n - (max_tokens - keep_bos);
  if (!has_target(begin, n)) return Fit::no_target;
  if (keep_bos) append(0, 1);
  append(begin, n);
  return Fit::truncated;
}

}  // namespace mlr::data

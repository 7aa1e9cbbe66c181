#include "data/tokenize.h"

#include <algorithm>
#include <optional>

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

namespace {

// The text of an example as segments; every target segment is trained on.
struct Segment {
  std::string_view text;
  bool target;
};

// Appends ids and mask of full[begin, end), a window of the example's text, less its first
// drop_front and last drop_back tokens (those that differ from the whole text's tokens near a cut,
// see Cut). Segment k starts at the token count of the text before it (from `begin`), encoded
// alone with its trailing whitespace moved into the segment (lm-evaluation-harness's rule);
// clamped to stay monotone when the joint tokenization merges across a boundary.
void tokenize_window(const Tokenizer& tokenizer, std::string_view full, const std::vector<Segment>& segments,
                     size_t begin, size_t end, size_t drop_front, size_t drop_back, std::vector<int32_t>& ids,
                     std::vector<uint8_t>& mask) {
  const std::string_view window = full.substr(begin, end - begin);
  const std::vector<int32_t> window_ids = tokenizer.encode(std::string(window), false);
  std::vector<size_t> bounds = {0};
  size_t char_pos = 0;
  for (size_t k = 0; k + 1 < segments.size(); ++k) {
    char_pos += segments[k].text.size();
    size_t count = 0;
    if (char_pos >= end) {
      count = window_ids.size();
    } else if (char_pos > begin) {
      const std::string_view before = rstrip(window.substr(0, char_pos - begin));
      count = before.empty() ? 0 : tokenizer.encode(std::string(before), false).size();
    }
    bounds.push_back(std::clamp(count, bounds.back(), window_ids.size()));
  }
  bounds.push_back(window_ids.size());
  std::vector<uint8_t> window_mask(window_ids.size(), 0);
  for (size_t k = 0; k < segments.size(); ++k) {
    if (!segments[k].target) continue;
    std::fill(window_mask.begin() + static_cast<std::ptrdiff_t>(bounds[k]),
              window_mask.begin() + static_cast<std::ptrdiff_t>(bounds[k + 1]), 1);
  }
  const size_t keep_end = window_ids.size() - std::min(window_ids.size(), drop_back);
  const size_t keep_begin = std::min(drop_front, keep_end);
  ids.insert(ids.end(), window_ids.begin() + static_cast<std::ptrdiff_t>(keep_begin),
             window_ids.begin() + static_cast<std::ptrdiff_t>(keep_end));
  mask.insert(mask.end(), window_mask.begin() + static_cast<std::ptrdiff_t>(keep_begin),
              window_mask.begin() + static_cast<std::ptrdiff_t>(keep_end));
}

// Bytes of context each side of a cut when checking how the tokenization behaves there.
constexpr size_t kCutContext = 1024;
// Tokens next to a cut that may differ from the whole text's and are dropped, at most.
constexpr size_t kMaxUnstableTokens = 4;
// A text is tokenized in windows only when it is this many times longer than a window: shorter
// ones are tokenized whole, as always.
constexpr size_t kWindowRatio = 4;

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_utf8_start(char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }

// Where a window ends (head) or starts (tail). The tokens of full[0, end) less their last `drop`
// are the first tokens of the whole text; the tokens of full[begin, n) less their first `drop` are
// its last tokens. Found by comparing, on kCutContext bytes each side of the cut, the tokens of
// the part with those of the whole neighbourhood: the tokenizers' pre-tokenization and merges are
// local, so what holds on the neighbourhood holds on the whole text. At a single space between
// words the parts usually tokenize exactly (drop 0); a tail may start after the space, where
// sentencepiece's dummy prefix stands for it; inside a long word a token or two is dropped.
struct Cut {
  size_t at = 0;
  size_t drop = 0;
};

enum class Side { head, tail };

std::optional<Cut> cut_near(const Tokenizer& tokenizer, std::string_view full, size_t target, Side side) {
  const auto try_cut = [&](size_t at) -> std::optional<Cut> {
    size_t lo = at - std::min(at, kCutContext), hi = std::min(full.size(), at + kCutContext);
    while (lo > 0 && !is_utf8_start(full[lo])) --lo;
    while (hi < full.size() && !is_utf8_start(full[hi])) ++hi;
    const std::vector<int32_t> joint = tokenizer.encode(std::string(full.substr(lo, hi - lo)), false);
    const std::vector<int32_t> part = side == Side::head ? tokenizer.encode(std::string(full.substr(lo, at - lo)), false)
                                                         : tokenizer.encode(std::string(full.substr(at, hi - at)), false);
    size_t agree = 0;  // tokens of the part that are the joint tokens (a prefix for head, a suffix for tail)
    if (side == Side::head) {
      while (agree < part.size() && agree < joint.size() && part[agree] == joint[agree]) ++agree;
    } else {
      while (agree < part.size() && agree < joint.size() &&
             part[part.size() - 1 - agree] == joint[joint.size() - 1 - agree])
        ++agree;
    }
    const size_t drop = part.size() - agree;
    if (drop > kMaxUnstableTokens || agree <= kMaxUnstableTokens) return std::nullopt;
    return Cut{at, drop};
  };
  constexpr int kTries = 8;
  constexpr size_t kSearch = kCutContext * 8;  // how far from `target` a cut may move
  const auto search = [&](auto&& candidate) -> std::optional<Cut> {
    int tried = 0;
    for (size_t d = 0; d < kSearch && tried < kTries; ++d) {
      const size_t p = side == Side::tail ? target + d : target - d;
      if (p == 0 || p + 1 >= full.size()) break;
      if (auto cut = candidate(p, tried)) return cut;
    }
    return std::nullopt;
  };
  // Word boundaries first: a single space between two non-space characters (a tail tries starting
  // at the space, then after it).
  if (auto cut = search([&](size_t p, int& tried) -> std::optional<Cut> {
        if (full[p] != ' ' || is_space(full[p - 1]) || is_space(full[p + 1])) return std::nullopt;
        ++tried;
        auto at_space = try_cut(p);
        if (side == Side::tail && (!at_space || at_space->drop > 0)) {
          if (auto after = try_cut(p + 1); after && (!at_space || after->drop < at_space->drop)) at_space = after;
        }
        return at_space;
      }))
    return cut;
  // Text without spaces: any character boundary.
  return search([&](size_t p, int& tried) -> std::optional<Cut> {
    if (!is_utf8_start(full[p])) return std::nullopt;
    ++tried;
    return try_cut(p);
  });
}

}  // namespace

TokenizedExample tokenize_example(const Tokenizer& tokenizer, const Example& example, const ResolvedSpecials& specials,
                                  int64_t max_row_tokens) {
  std::vector<Segment> segments;
  for (const Turn& turn : example.history) {
    segments.push_back({turn.prompt, false});
    segments.push_back({turn.target, true});
  }
  segments.push_back({example.prompt, false});
  segments.push_back({example.target, true});
  std::string full;
  size_t total = 0;
  for (const auto& s : segments) total += s.text.size();
  full.reserve(total);
  for (const auto& s : segments) full += s.text;

  TokenizedExample out;
  if (specials.bos) {
    out.ids.push_back(specials.bos_id);
    out.mask.push_back(0);
  }
  // A text far longer than a row: tokenize a head window holding at least max_row_tokens tokens
  // and a tail window likewise (see Cut), so that right truncation (the first tokens) and left
  // truncation (the last ones) of any row up to max_row_tokens see exactly the tokens of the whole
  // text, in time and memory bounded by the row length.
  bool whole = true;
  if (max_row_tokens > 0) {
    const auto row = static_cast<size_t>(max_row_tokens);
    for (size_t window = row * 8; whole && window * kWindowRatio < full.size(); window *= 2) {
      const auto head = cut_near(tokenizer, full, window, Side::head);
      const auto tail = cut_near(tokenizer, full, full.size() - window, Side::tail);
      if (!head || !tail || head->at >= tail->at) break;
      TokenizedExample windowed = out;
      tokenize_window(tokenizer, full, segments, 0, head->at, 0, head->drop, windowed.ids, windowed.mask);
      const size_t head_tokens = windowed.ids.size() - out.ids.size();
      tokenize_window(tokenizer, full, segments, tail->at, full.size(), tail->drop, 0, windowed.ids, windowed.mask);
      const size_t tail_tokens = windowed.ids.size() - out.ids.size() - head_tokens;
      if (head_tokens < row || tail_tokens < row) continue;  // dense text: a larger window
      out = std::move(windowed);
      out.windowed = true;
      whole = false;
    }
  }
  if (whole) tokenize_window(tokenizer, full, segments, 0, full.size(), 0, 0, out.ids, out.mask);
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

// Hand-written matchers for the pre-tokenizer regexes of llama/bpe.h.
//
// Each regex is an alternation tried left to right at the current position, first success wins
// (Perl/Oniguruma semantics, greedy quantifiers with backtracking). Each matcher below follows
// the alternatives in order and states what backtracking leaves for the ones that need it. Over
// the classes L (\p{L}), N (\p{N}), S (\s) and O (anything else), every character is matched by
// some alternative, so a match always exists and the pieces tile the text.
#include <cstddef>

#include "llama/bpe.h"
#include "llama/tokenizer_unicode.h"

namespace mlr::bpe {

namespace {

using unicode::CharClass;
constexpr CharClass L = CharClass::kLetter, N = CharClass::kNumber, S = CharClass::kSpace,
                    O = CharClass::kOther;

constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

bool is_cr_or_lf(char32_t c) { return c == '\r' || c == '\n'; }

class Matcher {
 public:
  explicit Matcher(std::string_view text) : cps_(unicode::decode_utf8(text)), n_(cps_.cp.size()) {
    cls_.reserve(n_);
    for (char32_t c : cps_.cp) cls_.push_back(unicode::char_class(c));
  }
  size_t size() const { return n_; }
  uint32_t offset(size_t i) const { return cps_.offset[i]; }

  // GPT-2 pattern at i (i < size()); returns the end of the match.
  size_t gpt2(size_t i) const {
    if (size_t k = contraction(i, false)) return i + k;
    // ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+': the optional space is U+0020 only. If the
    // space is followed by something else, retrying without it fails too (a space is not L, N
    // or O), so the start is i+1 after a space and i otherwise.
    const size_t s = (cp(i) == ' ' && i + 1 < n_) ? i + 1 : i;
    for (CharClass c : {L, N, O})
      if (cls_[s] == c) return run(s, c);
    return whitespace(i);
  }

  // LLaMA-3 pattern (max_digits 3) or Qwen2 pattern (max_digits 1) at i.
  size_t llama3(size_t i, size_t max_digits) const {
    if (size_t k = contraction(i, true)) return i + k;
    // [^\r\n\p{L}\p{N}]?\p{L}+ : a letter run, optionally preceded by one character that is not
    // CR, LF, a letter or a number (so " word", "\tword", "(word", "\u3000word").
    if (cls_[i] == L) return run(i, L);
    if (!is_cr_or_lf(cp(i)) && cls_[i] != N && i + 1 < n_ && cls_[i + 1] == L) return run(i + 1, L);
    // \p{N}{1,3}
    if (cls_[i] == N) {
      size_t j = i;
      while (j < n_ && cls_[j] == N && j - i < max_digits) ++j;
      return j;
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]* : punctuation run, optional leading space, trailing newlines.
    const size_t s = (cp(i) == ' ' && i + 1 < n_ && cls_[i + 1] == O) ? i + 1 : i;
    if (cls_[s] == O) {
      size_t j = run(s, O);
      while (j < n_ && is_cr_or_lf(cp(j))) ++j;
      return j;
    }
    // From here cls_[i] == S. \s*[\r\n]+ : \s* takes the whole whitespace run and gives back
    // until [\r\n]+ can match, so the match ends just after the run's last CR or LF.
    const size_t j = run(i, S);
    for (size_t k = j; k > i; --k)
      if (is_cr_or_lf(cp(k - 1))) return k;
    return whitespace(i);
  }

 private:
  char32_t cp(size_t i) const { return cps_.cp[i]; }

  size_t run(size_t i, CharClass c) const {
    while (i < n_ && cls_[i] == c) ++i;
    return i;
  }

  // 's 't 're 've 'm 'll 'd (ASCII apostrophe). Case-insensitive, as (?i:...) in Oniguruma, also
  // accepts upper case and U+017F LATIN SMALL LETTER LONG S, which case-folds to 's'. Returns
  // the length in code points, 0 when none matches.
  size_t contraction(size_t i, bool ignore_case) const {
    if (cp(i) != '\'' || i + 1 >= n_) return 0;
    const auto fold = [&](char32_t c) -> char32_t {
      if (!ignore_case) return c;
      if (c >= 'A' && c <= 'Z') return c - 'A' + 'a';
      return c == 0x17F ? U's' : c;
    };
    const char32_t a = fold(cp(i + 1));
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
    if (i + 2 < n_) {
      const char32_t b = fold(cp(i + 2));
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
    }
    return 0;
  }

  // \s+(?!\S)|\s+ at a whitespace character i. The greedy run stops before a non-space (or at
  // the end). At the end, the whole run matches. Otherwise the lookahead fails on the full run and
  // backtracking drops its last character, which leaves that one to start the next piece
  // (" word"); a run of one fails the first alternative and \s+ takes it.
  size_t whitespace(size_t i) const {
    const size_t j = run(i, S);
    if (j == n_) return j;
    return (j - 1 > i) ? j - 1 : j;
  }

  unicode::CodePoints cps_;
  size_t n_;
  std::vector<CharClass> cls_;
};

}  // namespace

std::optional<SplitPattern> recognise_pattern(std::string_view regex) {
  if (regex == kGpt2Regex) return SplitPattern::kGpt2;
  if (regex == kLlama3Regex) return SplitPattern::kLlama3;
  if (regex == kQwen2Regex) return SplitPattern::kQwen2;
  return std::nullopt;
}

void split_by_pattern(std::string_view text, SplitPattern pattern, std::vector<std::string_view>& out) {
  const Matcher m(text);
  for (size_t i = 0; i < m.size();) {
    size_t j = 0;
    switch (pattern) {
      case SplitPattern::kGpt2: j = m.gpt2(i); break;
      case SplitPattern::kLlama3: j = m.llama3(i, 3); break;
      case SplitPattern::kQwen2: j = m.llama3(i, 1); break;
    }
    out.push_back(text.substr(m.offset(i), m.offset(j) - m.offset(i)));
    i = j;
  }
}

void split_digits(std::string_view text, bool individual, std::vector<std::string_view>& out) {
  const unicode::CodePoints cps = unicode::decode_utf8(text);
  const size_t n = cps.cp.size();
  const auto is_digit = [&](size_t i) { return unicode::char_class(cps.cp[i]) == N; };
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    if (!is_digit(i) || !individual)
      while (j < n && is_digit(j) == is_digit(i)) ++j;
    out.push_back(text.substr(cps.offset[i], cps.offset[j] - cps.offset[i]));
    i = j;
  }
}

}  // namespace mlr::bpe

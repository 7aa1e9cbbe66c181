// The bits of Unicode the byte-level BPE tokenizer needs, without a regex or ICU dependency:
// UTF-8 decoding that never fails, the character classes of the pre-tokenizer patterns
// (\p{L}, \p{N}, \s), NFC normalization, and lossy UTF-8 repair for decoding.
//
// Coverage: \p{L} and \p{N} are the full general-category sets of Unicode 14.0 over all planes
// (tables generated from Python's unicodedata, see llama/tokenizer_unicode_tables.h); Hugging Face
// tokenizers (Oniguruma) uses Unicode 15.0, so only characters new in 15.0 can classify
// differently. \s is the White_Space property (what Oniguruma and Rust's char::is_whitespace use).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mlr::unicode {

// Decoded text: one code point per entry and the byte offset where each starts (offsets has one
// more entry: the total length). A byte that does not start a valid UTF-8 sequence (stray
// continuation, overlong form, surrogate, truncated sequence) decodes to kInvalid on its own, so
// every byte of the input belongs to exactly one entry.
inline constexpr char32_t kInvalid = 0xFFFD;
struct CodePoints {
  std::vector<char32_t> cp;
  std::vector<uint32_t> offset;
};
CodePoints decode_utf8(std::string_view text);

// Length of the valid UTF-8 sequence starting at text[0], or 0 if it is not valid.
size_t utf8_sequence_length(std::string_view text);
void append_utf8(std::string& out, char32_t cp);

enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };
CharClass char_class(char32_t cp);
bool is_whitespace(char32_t cp);

// Canonical composition (NFC). Invalid UTF-8 bytes pass through unchanged.
std::string nfc(std::string_view text);

// Bytes -> valid UTF-8, each maximal invalid subsequence replaced by U+FFFD (the rule of the
// Unicode standard, section 3.9, which Rust's String::from_utf8_lossy follows).
std::string utf8_lossy(std::string_view bytes);

}  // namespace mlr::unicode

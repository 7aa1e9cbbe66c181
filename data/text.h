// Text helpers shared by the readers and templates. Strings are UTF-8 bytes; where a dataset's
// reference code is Python (lm-evaluation-harness, Hugging Face datasets), the helpers follow
// Python's str semantics: lengths and slices count code points, and "whitespace" is what
// str.isspace() accepts (ASCII whitespace, \x1c-\x1f, U+0085, U+00A0, U+1680, U+2000-U+200A,
// U+2028, U+2029, U+202F, U+205F, U+3000).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mlr::data {

// Offset of the first byte that is not valid UTF-8 (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or npos when the whole text is valid.
size_t find_invalid_utf8(std::string_view s);
inline bool is_valid_utf8(std::string_view s) { return find_invalid_utf8(s) == std::string_view::npos; }

// Number of code points (Python len()). The text must be valid UTF-8.
size_t utf8_length(std::string_view s);

// s[begin:end] in code points with Python's clamping of out-of-range bounds (no negative indices).
std::string utf8_slice(std::string_view s, int64_t begin, int64_t end);

// Python str.strip() / rstrip() / split() (no argument) with the whitespace set above.
std::string_view strip(std::string_view s);
std::string_view rstrip(std::string_view s);
std::vector<std::string_view> split_whitespace(std::string_view s);

// s without its last code point (Python s[:-1]); "" stays "".
std::string drop_last(std::string_view s);

// First character lowercased / uppercased, the rest unchanged (Python s[0].lower() + s[1:]).
// Only ASCII letters change case; other first characters are left as they are.
std::string lower_first(std::string_view s);
std::string upper_first(std::string_view s);

// Replace every occurrence of `from` (non-empty) by `to`, left to right (Python str.replace).
std::string replace_all(std::string_view s, std::string_view from, std::string_view to);

// A short printable preview of a value for error messages: at most `max_chars` bytes (cut at a
// code point boundary), with control characters escaped.
std::string preview(std::string_view s, size_t max_chars = 40);

// FNV-1a, 64 bit. fnv1a64(b, fnv1a64(a)) hashes a then b. Used for cache keys (change detection,
// not security).
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ull;
uint64_t fnv1a64(std::string_view data, uint64_t hash = kFnvOffset);

// 1-based line number of byte offset `pos` in `text` (counting '\n').
int64_t line_of_offset(std::string_view text, size_t pos);

}  // namespace mlr::data

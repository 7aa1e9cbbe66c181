#include "data/text.h"

#include <algorithm>

#include <fmt/format.h>

namespace mlr::data {

namespace {

// Decodes the code point at s[i]; returns its byte length, or 0 if the bytes there are not a
// valid UTF-8 sequence (RFC 3629: shortest form only, no surrogates, at most U+10FFFF).
size_t decode_utf8(std::string_view s, size_t i, char32_t* cp) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  char32_t v;
  char32_t min;
  if ((c & 0xE0) == 0xC0) {
    n = 2, v = c & 0x1F, min = 0x80;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3, v = c & 0x0F, min = 0x800;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xC0) != 0x80) return 0;
    v = (v << 6) | (b(i + k) & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
  *cp = v;
  return n;
}

// Python str.isspace() for one code point.
bool is_space(char32_t c) {
  if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return true;
  if (c < 0x80) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Byte length of the whitespace code point at s[i], 0 if s[i] starts something else.
size_t space_at(std::string_view s, size_t i) {
  char32_t cp;
  const size_t n = decode_utf8(s, i, &cp);
  return n > 0 && is_space(cp) ? n : 0;
}

// Byte offsets of every code point start, plus s.size() at the end.
std::vector<size_t> code_point_starts(std::string_view s) {
  std::vector<size_t> starts;
  starts.reserve(s.size() + 1);
  for (size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<uint8_t>(s[i]) & 0xC0) != 0x80) starts.push_back(i);
  }
  starts.push_back(s.size());
  return starts;
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // Fast path over ASCII.
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    char32_t cp;
    const size_t n = decode_utf8(s, i, &cp);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

std::string utf8_slice(std::string_view s, int64_t begin, int64_t end) {
  const std::vector<size_t> starts = code_point_starts(s);
  const int64_t len = static_cast<int64_t>(starts.size()) - 1;
  begin = std::clamp<int64_t>(begin, 0, len);
  end = std::clamp<int64_t>(end, 0, len);
  if (end <= begin) return "";
  return std::string(s.substr(starts[begin], starts[end] - starts[begin]));
}

std::string_view rstrip(std::string_view s) {
  // Walk code points forward and remember where the trailing whitespace run starts.
  size_t keep = 0, i = 0;
  while (i < s.size()) {
    const size_t n = space_at(s, i);
    if (n > 0) {
      i += n;
    } else {
      char32_t cp;
      const size_t m = decode_utf8(s, i, &cp);
      i += m > 0 ? m : 1;
      keep = i;
    }
  }
  return s.substr(0, keep);
}

std::string_view strip(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = space_at(s, i);
    if (n == 0) break;
    i += n;
  }
  return rstrip(s.substr(i));
}

std::vector<std::string_view> split_whitespace(std::string_view s) {
  std::vector<std::string_view> words;
  size_t i = 0;
  while (i < s.size()) {
    size_t n;
    while (i < s.size() && (n = space_at(s, i)) > 0) i += n;
    if (i >= s.size()) break;
    const size_t start = i;
    while (i < s.size() && space_at(s, i) == 0) {
      char32_t cp;
      const size_t m = decode_utf8(s, i, &cp);
      i += m > 0 ? m : 1;
    }
    words.push_back(s.substr(start, i - start));
  }
  return words;
}

std::string drop_last(std::string_view s) {
  if (s.empty()) return "";
  size_t i = s.size() - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return std::string(s.substr(0, i));
}

std::string lower_first(std::string_view s) {
  std::string out(s);
  if (!out.empty() && out[0] >= 'A' && out[0] <= 'Z') out[0] = static_cast<char>(out[0] - 'A' + 'a');
  return out;
}

std::string upper_first(std::string_view s) {
  std::string out(s);
  if (!out.empty() && out[0] >= 'a' && out[0] <= 'z') out[0] = static_cast<char>(out[0] - 'a' + 'A');
  return out;
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (true) {
    const size_t j = s.find(from, i);
    if (j == std::string_view::npos) break;
    out.append(s.substr(i, j - i));
    out.append(to);
    i = j + from.size();
  }
  out.append(s.substr(i));
  return out;
}

std::string preview(std::string_view s, size_t max_chars) {
  std::string out;
  size_t i = 0;
  for (; i < s.size() && out.size() < max_chars; ++i) {
    const auto c = static_cast<uint8_t>(s[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  if (i < s.size()) {
    // Do not cut a multi-byte character in half.
    while (!out.empty() && (static_cast<uint8_t>(out.back()) & 0xC0) == 0x80) out.pop_back();
    if (!out.empty() && static_cast<uint8_t>(out.back()) >= 0xC0) out.pop_back();
    out += "...";
  }
  return out;
}

uint64_t fnv1a64(std::string_view data, uint64_t hash) {
  for (char c : data) {
    hash ^= static_cast<uint8_t>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

int64_t line_of_offset(std::string_view text, size_t pos) {
  pos = std::min(pos, text.size());
  return 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(pos), '\n');
}

}  // namespace mlr::data

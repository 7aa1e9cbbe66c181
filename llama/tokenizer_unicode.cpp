#include "llama/tokenizer_unicode.h"

#include <algorithm>
#include <array>
#include <iterator>

#include "llama/tokenizer_unicode_tables.h"

namespace mlr::unicode {

namespace {

// Well-formed UTF-8 (Unicode Table 3-7). For a lead byte: the sequence length (0 when the byte
// cannot start a sequence) and the range allowed for the second byte, which excludes overlong
// forms (E0, F0), surrogates (ED) and code points past U+10FFFF (F4).
int sequence_shape(uint8_t lead, uint8_t& lo, uint8_t& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) {
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
    return 3;
  }
  if (lead < 0xF5) {
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
    return 4;
  }
  return 0;
}

// How many bytes at the start of s follow the well-formed pattern (at most `expected`, the length
// the lead byte announces; both 0 for a byte that cannot start a sequence).
size_t well_formed_prefix(std::string_view s, size_t& expected) {
  uint8_t lo, hi;
  expected = static_cast<size_t>(sequence_shape(static_cast<uint8_t>(s[0]), lo, hi));
  if (expected <= 1) return expected;
  size_t k = 1;
  for (; k < expected && k < s.size(); ++k) {
    const auto c = static_cast<uint8_t>(s[k]);
    if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF)) break;
  }
  return k;
}

char32_t decode_sequence(std::string_view s, size_t len) {
  const auto b = [&](size_t i) { return static_cast<char32_t>(static_cast<uint8_t>(s[i])); };
  switch (len) {
    case 1: return b(0);
    case 2: return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3: return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default: return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

template <typename Table>
bool in_ranges(const Table& table, char32_t cp) {
  auto it = std::upper_bound(std::begin(table), std::end(table), cp,
                             [](char32_t c, const auto& r) { return c < r.first; });
  return it != std::begin(table) && cp <= std::prev(it)->last;
}

// ASCII classes, so the common case needs no search.
constexpr std::array<CharClass, 128> kAsciiClass = [] {
  std::array<CharClass, 128> t{};
  for (int c = 0; c < 128; ++c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) t[c] = CharClass::kLetter;
    else if (c >= '0' && c <= '9') t[c] = CharClass::kNumber;
    else if (c == ' ' || (c >= '\t' && c <= '\r')) t[c] = CharClass::kSpace;
    else t[c] = CharClass::kOther;
  }
  return t;
}();

// ---- NFC -------------------------------------------------------------------------------------
// NFC = canonical decomposition, canonical ordering of combining marks, canonical composition
// (Unicode Standard Annex #15). Hangul syllables decompose and compose arithmetically.
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount,
                   kSCount = kLCount * kNCount;
// Invalid input bytes travel through NFC as these values (never combining, never composing)
// and come out as the same byte.
constexpr char32_t kRawByteBase = 0x110000;

uint8_t combining_class(char32_t cp) {
  if (cp < 0x300 || cp >= kRawByteBase) return 0;
  const auto& t = unicode_tables::kCombiningClass;
  auto it = std::upper_bound(std::begin(t), std::end(t), cp,
                             [](char32_t c, const auto& r) { return c < r.first; });
  if (it == std::begin(t) || cp > std::prev(it)->last) return 0;
  return std::prev(it)->cls;
}

void decompose(char32_t cp, std::u32string& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const char32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  const auto& t = unicode_tables::kDecomposition;
  auto it = std::lower_bound(std::begin(t), std::end(t), cp,
                             [](const auto& d, char32_t c) { return d.cp < c; });
  if (it == std::end(t) || it->cp != cp) {
    out.push_back(cp);
    return;
  }
  decompose(it->a, out);  // mappings are applied recursively (full decomposition)
  if (it->b != 0) decompose(it->b, out);
}

// The primary composite of a and b, or 0.
char32_t compose(char32_t a, char32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& t = unicode_tables::kComposition;
  auto it = std::lower_bound(std::begin(t), std::end(t), std::pair{a, b}, [](const auto& c, const auto& key) {
    return c.a < key.first || (c.a == key.first && c.b < key.second);
  });
  return (it != std::end(t) && it->a == a && it->b == b) ? it->cp : 0;
}

}  // namespace

size_t utf8_sequence_length(std::string_view text) {
  if (text.empty()) return 0;
  size_t expected;
  const size_t k = well_formed_prefix(text, expected);
  return (expected != 0 && k == expected) ? k : 0;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

CodePoints decode_utf8(std::string_view text) {
  CodePoints r;
  r.cp.reserve(text.size());
  r.offset.reserve(text.size() + 1);
  size_t i = 0;
  while (i < text.size()) {
    r.offset.push_back(static_cast<uint32_t>(i));
    const size_t len = utf8_sequence_length(text.substr(i));
    if (len == 0) {
      r.cp.push_back(kInvalid);
      i += 1;
    } else {
      r.cp.push_back(decode_sequence(text.substr(i), len));
      i += len;
    }
  }
  r.offset.push_back(static_cast<uint32_t>(text.size()));
  return r;
}

bool is_whitespace(char32_t cp) {
  // The White_Space property.
  if (cp < 0x80) return cp == ' ' || (cp >= '\t' && cp <= '\r');
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

CharClass char_class(char32_t cp) {
  if (cp < 0x80) return kAsciiClass[cp];
  if (is_whitespace(cp)) return CharClass::kSpace;
  if (in_ranges(unicode_tables::kLetter, cp)) return CharClass::kLetter;
  if (in_ranges(unicode_tables::kNumber, cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

std::string nfc(std::string_view text) {
  // Text made only of code points below U+0300 (lead bytes below 0xCC) is already NFC: nothing
  // there decomposes into something that recomposes differently, and nothing combines with it.
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<uint8_t>(c) < 0xCC; }))
    return std::string(text);

  std::u32string d;
  d.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t len = utf8_sequence_length(text.substr(i));
    if (len == 0) {
      d.push_back(kRawByteBase + static_cast<uint8_t>(text[i]));
      i += 1;
    } else {
      decompose(decode_sequence(text.substr(i), len), d);
      i += len;
    }
  }
  // Canonical ordering: within each run of non-starters, a stable sort by combining class.
  for (size_t i = 0; i < d.size();) {
    if (combining_class(d[i]) == 0) { ++i; continue; }
    size_t j = i;
    while (j < d.size() && combining_class(d[j]) != 0) ++j;
    std::stable_sort(d.begin() + static_cast<std::ptrdiff_t>(i), d.begin() + static_cast<std::ptrdiff_t>(j),
                     [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
    i = j;
  }
  // Canonical composition: a character joins the last starter unless a character in between
  // has a class that blocks it (same or higher class, or a starter).
  if (!d.empty()) {
    size_t starter = 0, out = 1;
    int last_class = combining_class(d[0]) == 0 ? 0 : 256;  // a leading mark blocks everything
    for (size_t i = 1; i < d.size(); ++i) {
      const char32_t c = d[i];
      const int cls = combining_class(c);
      const char32_t composite = (last_class < 256) ? compose(d[starter], c) : 0;
      if (composite != 0 && (last_class < cls || last_class == 0)) {
        d[starter] = composite;
        continue;
      }
      if (cls == 0) starter = out;
      last_class = cls;
      d[out++] = c;
    }
    d.resize(out);
  }
  std::string result;
  result.reserve(text.size());
  for (char32_t c : d) {
    if (c >= kRawByteBase) result.push_back(static_cast<char>(c - kRawByteBase));
    else append_utf8(result, c);
  }
  return result;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    size_t expected;
    const size_t k = well_formed_prefix(bytes.substr(i), expected);
    if (expected != 0 && k == expected) {
      out.append(bytes.substr(i, k));
      i += k;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD for the maximal subpart (at least one byte)
      i += std::max<size_t>(k, 1);
    }
  }
  return out;
}

}  // namespace mlr::unicode

// Byte-level BPE (GPT-2, LLaMA 3, Qwen2, SmolLM) read from a Hugging Face tokenizer.json and
// implemented here, without a tokenizer library. The pipeline of encode, as in `tokenizers`:
//
//   text -> split out added tokens that match verbatim (normalized=false ones first)
//        -> normalizer (none, or NFC)
//        -> split out added tokens with normalized=true
//        -> pre-tokenizers in order: Split(regex), Digits, and last ByteLevel (optional prefix
//           space, optional GPT-2 split, bytes mapped to printable characters)
//        -> BPE merges by rank within each piece (ignore_merges: a piece already in the vocabulary
//           is one token)
//        -> post-processor template (e.g. <|begin_of_text|> in front) when add_special is set.
//
// The regex of a Split pre-tokenizer is not interpreted: the three patterns used by the models we
// support are recognised by their exact text and run by hand-written matchers over code points
// (bpe_pretokenizer.cpp). An unknown pattern is an error that names the file and the pattern.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlr::bpe {

enum class SplitPattern {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kGpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
  // \s*[\r\n]+|\s+(?!\S)|\s+          (LLaMA 3, the cl100k pattern of GPT-4)
  kLlama3,
  // As kLlama3 with \p{N} (one digit per piece) in place of \p{N}{1,3}.
  kQwen2,
};

// The pattern whose regex source is exactly `regex`, if it is one we know.
std::optional<SplitPattern> recognise_pattern(std::string_view regex);

// Appends the matches of the pattern in text, left to right. Every character belongs to a match,
// so the pieces concatenate back to text. Invalid UTF-8 bytes count as punctuation.
void split_by_pattern(std::string_view text, SplitPattern pattern, std::vector<std::string_view>& out);

// The Digits pre-tokenizer: \p{N} characters isolated one by one (individual) or as runs; the
// text between them forms pieces too.
void split_digits(std::string_view text, bool individual, std::vector<std::string_view>& out);

}  // namespace mlr::bpe

// Learns a byte-level BPE tokenizer from text and writes it as Hugging Face files (tokenizer.json,
// tokenizer_config.json) that llama/'s loader and transformers read. The pre-tokenizer is GPT-2's
// (its regex, then bytes mapped to printable characters) after a Digits step that isolates every
// digit, so numbers are spelled one digit per token. Merges are learned greedily: the most frequent
// adjacent pair over the pre-tokenized words (ties: the smaller pair by byte order), until the
// vocabulary (256 bytes + merges + <|endoftext|>) reaches `vocab_size` or no pair occurs twice.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace mlr::demo {

struct BpeTokenizerInfo {
  int64_t vocab_size = 0;  // including <|endoftext|>
  int64_t merges = 0;
  int64_t eos_id = 0;      // <|endoftext|>: end of text, and the BOS/EOS/padding token
};

BpeTokenizerInfo train_byte_level_bpe(const std::string& text, int64_t vocab_size, const std::filesystem::path& dir);

}  // namespace mlr::demo

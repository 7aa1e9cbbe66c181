// Byte-level BPE training (see bpe_trainer.h).
#include "demo/bpe_trainer.h"

#include <algorithm>
#include <map>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/atomic_file.h"
#include "llama/bpe.h"
#include "tensor/error.h"

namespace mlr::demo {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {  // the byte map's code points are below 0x800
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256 + n in byte order.
// Returned in GPT-2's vocabulary order (the printable ranges first).
std::vector<std::pair<uint8_t, std::string>> byte_symbols() {
  std::vector<std::pair<uint8_t, std::string>> out;
  std::vector<bool> printable(256, false);
  for (int b = 33; b <= 126; ++b) printable[b] = true;
  for (int b = 161; b <= 172; ++b) printable[b] = true;
  for (int b = 174; b <= 255; ++b) printable[b] = true;
  for (int b = 0; b < 256; ++b)
    if (printable[b]) out.emplace_back(static_cast<uint8_t>(b), utf8(static_cast<uint32_t>(b)));
  int n = 0;
  for (int b = 0; b < 256; ++b)
    if (!printable[b]) out.emplace_back(static_cast<uint8_t>(b), utf8(static_cast<uint32_t>(256 + n++)));
  return out;
}

}  // namespace

BpeTokenizerInfo train_byte_level_bpe(const std::string& text, int64_t vocab_size, const fs::path& dir) {
  MLR_CHECK(vocab_size >= 257, "demo: a byte-level BPE needs a vocabulary of at least 257, got {}", vocab_size);
  const auto bytes = byte_symbols();
  std::vector<std::string> symbol_of(256);
  for (const auto& [b, s] : bytes) symbol_of[b] = s;

  // Word frequencies after the pre-tokenizer: Digits (individual), then GPT-2's regex.
  std::map<std::string, int64_t> word_counts;
  std::vector<std::string_view> digit_pieces, pieces;
  bpe::split_digits(text, /*individual=*/true, digit_pieces);
  for (std::string_view p : digit_pieces) {
    pieces.clear();
    bpe::split_by_pattern(p, bpe::SplitPattern::kGpt2, pieces);
    for (std::string_view w : pieces) ++word_counts[std::string(w)];
  }
  struct Word {
    std::vector<std::string> symbols;
    int64_t count;
  };
  std::vector<Word> words;
  for (const auto& [w, c] : word_counts) {
    Word word{{}, c};
    for (unsigned char ch : w) word.symbols.push_back(symbol_of[ch]);
    words.push_back(std::move(word));
  }

  json vocab = json::object();
  for (size_t i = 0; i < bytes.size(); ++i) vocab[bytes[i].second] = static_cast<int64_t>(i);
  json merges = json::array();
  int64_t next_id = 256;
  while (next_id < vocab_size - 1) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;
    for (const Word& w : words)
      for (size_t i = 0; i + 1 < w.symbols.size(); ++i) pairs[{w.symbols[i], w.symbols[i + 1]}] += w.count;
    auto best = pairs.end();
    for (auto it = pairs.begin(); it != pairs.end(); ++it)
      if (best == pairs.end() || it->second > best->second) best = it;  // first maximum in map order
    if (best == pairs.end() || best->second < 2) break;
    const auto [left, right] = best->first;
    const std::string merged = left + right;
    merges.push_back(left + " " + right);
    vocab[merged] = next_id++;
    for (Word& w : words) {
      std::vector<std::string> out;
      for (size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == left && w.symbols[i + 1] == right) {
          out.push_back(merged);
          ++i;
        } else {
          out.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(out);
    }
  }
  BpeTokenizerInfo info;
  info.eos_id = next_id;
  info.vocab_size = next_id + 1;
  info.merges = static_cast<int64_t>(merges.size());
  const std::string eos = "<|endoftext|>";

  json tokenizer = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens",
       json::array({{{"id", info.eos_id}, {"content", eos}, {"single_word", false}, {"lstrip", false},
                     {"rstrip", false}, {"normalized", false}, {"special", true}}})},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers", json::array({{{"type", "Digits"}, {"individual_digits", true}},
                                       {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true},
                                        {"use_regex", true}}})}}},
      {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab}, {"merges", merges}}}};
  json config = {{"bos_token", eos}, {"eos_token", eos}, {"unk_token", eos}, {"pad_token", eos},
                 {"tokenizer_class", "GPT2Tokenizer"}, {"add_prefix_space", false}};
  fs::create_directories(dir);
  atomic_write_file((dir / "tokenizer.json").string(), tokenizer.dump(1) + "\n");
  atomic_write_file((dir / "tokenizer_config.json").string(), config.dump(2) + "\n");
  return info;
}

}  // namespace mlr::demo

// Tokenizers: the interface every tokenizer implements, and the loader that picks one from a
// Hugging Face checkpoint directory, reading BOS/EOS behaviour from tokenizer_config.json.
//
// The default backend gives the tokens of transformers' AutoTokenizer (version 5.25; checked by
// tests/fixtures/tokenizer/shared_data_parity.json over every shared data file):
//   tokenizer.json (byte-level BPE of LLaMA 3 / GPT-2, or the sentencepiece-style BPE of LLaMA 1/2
//     and Mistral) -> that pipeline; with tokenizer_class LlamaTokenizer in tokenizer_config.json
//     the normalizer and pre-tokenizer are replaced as LlamaTokenizer does (Metaspace, legacy flag);
//   tokenizer.model + tokenizer_config.json naming LlamaTokenizer -> converted to a BPE as
//     transformers converts it (merges from piece order, byte fallback, no whitespace collapsing);
//   tokenizer.model alone (or a config without tokenizer_class) -> the sentencepiece library, with
//     LLaMA's BOS rule.
// TokenizerBackend::sentencepiece always reads tokenizer.model through the sentencepiece library
// (Meta's tokens: "a  b" is ▁a ▁ ▁b where transformers gives ▁a ▁▁ b).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mlr {

enum class TokenizerBackend { transformers, sentencepiece };

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Text -> ids. add_special adds BOS/EOS as the tokenizer's configuration says (add_bos_token,
  // add_eos_token); with add_special=false, no special token is added.
  virtual std::vector<int32_t> encode(const std::string& text, bool add_special = false) const = 0;
  // Ids -> text; skip_special drops BOS/EOS/pad and other special tokens.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special = true) const = 0;
  virtual int32_t vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  virtual std::optional<int32_t> pad_id() const = 0;
  // Whether encode(text, true) prepends BOS / appends EOS.
  virtual bool adds_bos() const = 0;
  virtual bool adds_eos() const = 0;
  // The token's string as stored in the vocabulary (for printing).
  virtual std::string id_to_piece(int32_t id) const = 0;
  // A short stable identity (kind + hash of the vocabulary files) for cache keys.
  virtual std::string fingerprint() const = 0;
  // Whose tokens these are: transformers' or the sentencepiece library's (recorded in cache keys).
  virtual TokenizerBackend backend() const { return TokenizerBackend::transformers; }
};

// "transformers" or "sentencepiece"; mlr::Error naming the value otherwise.
TokenizerBackend parse_tokenizer_backend(std::string_view name);
const char* tokenizer_backend_name(TokenizerBackend backend);

// Loads from a checkpoint directory or a tokenizer file (tokenizer.model or tokenizer.json).
// Throws mlr::Error naming the path when nothing usable is found or a file is malformed.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path,
                                          TokenizerBackend backend = TokenizerBackend::transformers);

}  // namespace mlr

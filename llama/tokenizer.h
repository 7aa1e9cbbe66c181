// Tokenizers: the interface every tokenizer implements, and the loader that picks one from a
// Hugging Face checkpoint directory (tokenizer.json -> byte-level BPE; tokenizer.model ->
// sentencepiece), reading BOS/EOS behaviour from tokenizer_config.json when present.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace mlr {

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
};

// Loads from a checkpoint directory or a tokenizer file (tokenizer.model or tokenizer.json).
// Throws mlr::Error naming the path when nothing usable is found or a file is malformed.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);

}  // namespace mlr

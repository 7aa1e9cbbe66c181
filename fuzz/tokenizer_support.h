// Shared by the tokenizer targets: what is done with a tokenizer once it has loaded.
#pragma once

#include <string>
#include <vector>

#include "llama/tokenizer.h"

namespace mlr::fuzz {

// Encodes text that reaches every pre-tokenizer path (letters, digits, spaces, newlines, marks,
// CJK, emoji, special-token look-alikes), then decodes and prints every id it got.
inline void exercise_tokenizer(const Tokenizer& tokenizer) {
  static const std::string text =
      "Hello, world! 12345 don't  stop\n\n\tTabs  <s> </s> <|endoftext|> <|begin_of_text|> "
      "Grüße aus Zürich ½ 日本語 🙂 a\xcc\x81";
  for (bool special : {false, true}) {
    const std::vector<int32_t> ids = tokenizer.encode(text, special);
    (void)tokenizer.decode(ids, true);
    (void)tokenizer.decode(ids, false);
    for (int32_t id : ids) (void)tokenizer.id_to_piece(id);
  }
  (void)tokenizer.encode("", true);
  (void)tokenizer.vocab_size();
  (void)tokenizer.bos_id();
  (void)tokenizer.eos_id();
  (void)tokenizer.pad_id();
  (void)tokenizer.fingerprint();
}

}  // namespace mlr::fuzz

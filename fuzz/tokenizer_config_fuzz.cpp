// tokenizer_config.json (special tokens, add_bos_token / add_eos_token) next to each of two small
// valid tokenizer.json files: GPT-2-like with <|endoftext|>, LLaMA-like with <s> and </s>.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "fuzz/tokenizer_support.h"

namespace {

// Byte-level BPE over the characters of "hello world" (Ġ is the byte-level space).
constexpr const char* kGpt2Like = R"({
  "model": {"type": "BPE", "vocab": {"h": 0, "e": 1, "l": 2, "o": 3, "Ġ": 4, "w": 5, "r": 6, "d": 7,
            "he": 8, "ll": 9, "hell": 10, "hello": 11, "<|endoftext|>": 12}, "merges": ["h e", "l l", "he ll", "hell o"]},
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
  "decoder": {"type": "ByteLevel"},
  "added_tokens": [{"id": 12, "content": "<|endoftext|>", "special": true, "lstrip": false, "rstrip": false,
                    "normalized": false, "single_word": false}]
})";
constexpr const char* kLlamaLike = R"({
  "model": {"type": "BPE", "vocab": {"<s>": 0, "</s>": 1, "h": 2, "e": 3, "l": 4, "o": 5, "Ġ": 6, "he": 7},
            "merges": [["h", "e"]], "ignore_merges": true},
  "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": false}]},
  "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
                     "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel"},
  "added_tokens": [{"id": 0, "content": "<s>", "special": true}, {"id": 1, "content": "</s>", "special": true}]
})";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  fuzz::scratch().write("tokenizer_config.json", fuzz::as_text(data, size));
  for (const char* tokenizer_json : {kGpt2Like, kLlamaLike}) {
    fuzz::scratch().write("tokenizer.json", tokenizer_json);
    fuzz::expect_clean_rejection([&] {
      const auto tokenizer = load_tokenizer(fuzz::scratch().path().string());
      fuzz::exercise_tokenizer(*tokenizer);
    });
  }
  return 0;
}

// tokenizer.json of a Hugging Face checkpoint (byte-level BPE: vocabulary, merges, added tokens,
// normalizer, pre-tokenizer, post-processor, decoder), loaded from a checkpoint directory as
// load_tokenizer does, then used to encode and decode.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "fuzz/tokenizer_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  fuzz::scratch().write("tokenizer.json", fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const auto tokenizer = load_tokenizer(fuzz::scratch().path().string());
    fuzz::exercise_tokenizer(*tokenizer);
  });
  return 0;
}

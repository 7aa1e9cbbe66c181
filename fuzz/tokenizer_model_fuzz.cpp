// tokenizer.model, a sentencepiece model (a protobuf read by libsentencepiece), loaded as
// load_tokenizer loads a file that is not *.json, then used to encode and decode.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "fuzz/tokenizer_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  const auto path = fuzz::scratch().write("tokenizer.model", fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const auto tokenizer = load_tokenizer(path.string());
    fuzz::exercise_tokenizer(*tokenizer);
  });
  return 0;
}

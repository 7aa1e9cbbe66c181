// The data section of a run in YAML (data/config.cpp): tokenizer, cache, mixture, packing and
// datasets with their templates (each template is compiled while parsing).
#include <cstddef>
#include <cstdint>
#include <string>

#include "data/config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  const std::string text(fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const data::DataConfig config = data::parse_data_config(text, "mixture.yaml", "/fuzz/configs");
    data::validate_data_config(config);
  });
  return 0;
}

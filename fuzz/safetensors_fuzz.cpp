// A safetensors file: the 8-byte header length, the JSON header and the data section
// (SafetensorsFile::open), then every tensor read as stored and converted to f32.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "llama/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  const auto path = fuzz::scratch().write("model.safetensors", fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const SafetensorsFile file = SafetensorsFile::open(path.string());
    for (const std::string& name : file.names()) {
      // A valid header can describe gigabytes of zeros-sized-by-offsets; only small tensors are read.
      if (file.info(name).end - file.info(name).begin > (1u << 20)) continue;
      (void)file.get(name);
      (void)file.get(name, DType::f32);
    }
  });
  return 0;
}

// config.json of a checkpoint (LlamaConfig::load), then the RoPE frequencies it implies.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "llama/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  const auto path = fuzz::scratch().write("config.json", fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const LlamaConfig config = LlamaConfig::load(path.string());
    (void)config.kv_groups();
    (void)rope_inv_freq(config);
  });
  return 0;
}

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
    // rope_inv_freq allocates head_dim / 2 floats. Sizes in a config are bounded by memory, not by
    // the parser: the model's weights (vocab_size x hidden_size, ...) are allocated before it.
    if (config.head_dim <= (1 << 20)) (void)rope_inv_freq(config);
  });
  return 0;
}

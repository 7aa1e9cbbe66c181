// model.safetensors.index.json of a sharded checkpoint (Checkpoint::open on the directory), next to
// two small valid shards: the index must name exactly the tensors they hold.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "llama/safetensors.h"
#include "tensor/tensor.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace mlr;
  const auto& dir = mlr::fuzz::scratch().path();
  save_safetensors((dir / "model-00001-of-00002.safetensors").string(),
                   {{"model.embed_tokens.weight", zeros({4, 2})}, {"model.norm.weight", ones({2})}});
  save_safetensors((dir / "model-00002-of-00002.safetensors").string(), {{"lm_head.weight", zeros({4, 2})}});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  fuzz::scratch().write("model.safetensors.index.json", fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const Checkpoint checkpoint = Checkpoint::open(fuzz::scratch().path().string());
    for (const std::string& name : checkpoint.names()) (void)checkpoint.get(name, DType::f32);
  });
  return 0;
}

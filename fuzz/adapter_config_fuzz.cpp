// adapter_config.json of an adapter directory (PEFT layout), read by read_adapter_file next to a
// small valid adapter_model.safetensors, then turned into the adapter config its peft_type names
// (any registered type: multilora/registry.h) as mlr-eval and mlr-merge do.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_support.h"
#include "llama/safetensors.h"
#include "multilora/adapter_file.h"
#include "multilora/registry.h"
#include "tensor/tensor.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  using namespace mlr;
  const std::string module = "model.layers.0.self_attn.q_proj";
  save_safetensors((mlr::fuzz::scratch().path() / kAdapterWeightsFile).string(),
                   {{adapter_tensor_key(module, "lora_A.weight"), zeros({2, 4})},
                    {adapter_tensor_key(module, "lora_B.weight"), zeros({4, 2})}});
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mlr;
  fuzz::scratch().write(kAdapterConfigFile, fuzz::as_text(data, size));
  fuzz::expect_clean_rejection([&] {
    const AdapterFile file = read_adapter_file(fuzz::scratch().path().string());
    (void)adapter_module_paths(file);
    (void)adapter_type_of_file(file.config).from_json(file.config);
  });
  return 0;
}

// Adapter files in PEFT's layout (see README.md for every field and tensor):
//   <dir>/adapter_config.json        {"peft_type": "LORA" | "MULTILORA" | "SMORA", "r": ..., ...}
//   <dir>/adapter_model.safetensors  base_model.model.<module path>.<tensor name>
// where <module path> is the Hugging Face module name (model.layers.0.self_attn.q_proj) and the
// tensor names are the adapters' named_tensors(): lora_A.weight, lora_B.weight, and for
// MultiLoRA multilora_scale, for SMoRA smora_router.weight and smora_bias, for DoRA
// lora_magnitude_vector. The config's fields are the adapter type's config_json() plus PEFT's
// defaults for LoraConfig; the type is found by multilora/registry.h's adapter_type_of_file. LoRA
// and DoRA files written here load in PEFT and PEFT's load here.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "multilora/adapter.h"

namespace mlr {

inline constexpr const char* kAdapterConfigFile = "adapter_config.json";
inline constexpr const char* kAdapterWeightsFile = "adapter_model.safetensors";

// An adapter at a module path of the model ("model.layers.0.self_attn.q_proj").
struct NamedAdapter {
  std::string module_path;
  AdaptedLinear* adapter = nullptr;
};

struct AdapterSaveOptions {  // empty strings are written as null
  std::string base_model_name_or_path;
  std::string task_type = "CAUSAL_LM";  // PEFT then wraps the model as PeftModelForCausalLM
};

// "base_model.model.<module_path>.<tensor_name>"
std::string adapter_tensor_key(const std::string& module_path, const std::string& tensor_name);

// Writes adapter_config.json and adapter_model.safetensors into `dir` (created if needed). All
// adapters must be of one type with the same hyperparameters (one config describes them all).
void save_adapter(const std::string& dir, const std::vector<NamedAdapter>& adapters,
                  const AdapterSaveOptions& options = {});

struct AdapterFile {
  nlohmann::json config;
  std::map<std::string, Tensor> tensors;  // full keys, as stored
};
// Reads and validates the two files (JSON syntax, a registered type, the safetensors header).
AdapterFile read_adapter_file(const std::string& dir);

// Loads `dir` into existing adapters: the file's type and structural hyperparameters (r, alpha,
// rsLoRA, ranks, scale mode, top_k, ...: AdapterType::structural_fields) must match, and its tensor keys and shapes must be exactly
// those the adapters expect. Any mismatch gives one mlr::Error listing every missing, unexpected
// and mis-shaped tensor and every differing field. Values are converted to each adapter's dtype
// and copied in place (parameters keep their identity).
void load_adapter(const std::string& dir, const std::vector<NamedAdapter>& adapters);

// The module paths a file holds adapters for, sorted.
std::vector<std::string> adapter_module_paths(const AdapterFile& file);

}  // namespace mlr

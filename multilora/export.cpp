#include "multilora/export.h"

#include <filesystem>

#include "base/atomic_file.h"
#include "llama/safetensors.h"
#include "multilora/inject.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

namespace mlr {

void save_merged_pretrained(LlamaForCausalLM& model, const std::string& dir, uint64_t max_shard_bytes) {
  std::vector<AdaptedLinear*> merged_here;
  for (auto& na : find_adapters(model)) {
    const auto reason = na.adapter->merge_unsupported_reason();
    MLR_CHECK(!reason, "save_merged_pretrained: the {} adapter at '{}' cannot be merged ({}), so no plain checkpoint "
              "reproduces the adapted model", na.adapter->type().display_name, na.module_path, *reason);
  }
  for (auto& na : find_adapters(model)) {
    if (!na.adapter->merged()) {
      na.adapter->merge();
      merged_here.push_back(na.adapter);
    }
  }
  try {
    std::error_code ec;
    fs::create_directories(dir, ec);
    MLR_CHECK(!ec, "save_merged_pretrained: cannot create {}: {}", dir, ec.message());
    const DType dtype = model.model->embed_tokens->weight().dtype();
    atomic_write_file(fs::path(dir) / "config.json", llama_config_to_json(model.config(), dtype).dump(2) + "\n");
    std::vector<std::pair<std::string, Tensor>> tensors = merged_base_state_dict(model);
    for (auto& [name, t] : tensors) t = t.cpu().contiguous();
    save_sharded(dir, tensors, max_shard_bytes);
  } catch (...) {
    for (AdaptedLinear* a : merged_here) a->unmerge();
    throw;
  }
  for (AdaptedLinear* a : merged_here) a->unmerge();
}

}  // namespace mlr

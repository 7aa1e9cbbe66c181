#include "multilora/export.h"

#include <filesystem>
#include <fstream>

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
    const fs::path config_path = fs::path(dir) / "config.json";
    fs::path tmp = config_path;
    tmp += ".tmp";
    {
      std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
      MLR_CHECK(out.good(), "save_merged_pretrained: cannot write {}", tmp.string());
      out << llama_config_to_json(model.config(), dtype).dump(2) << "\n";
      out.close();
      MLR_CHECK(out.good(), "save_merged_pretrained: writing {} failed", tmp.string());
    }
    fs::rename(tmp, config_path, ec);
    MLR_CHECK(!ec, "save_merged_pretrained: cannot rename {}: {}", tmp.string(), ec.message());
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

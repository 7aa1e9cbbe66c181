// mlr-merge: fold an adapter (any registered type with a fixed dense update: LoRA, MultiLoRA, DoRA)
// into its base model and write a Hugging Face checkpoint directory that transformers loads
// (config.json, safetensors shards + index past --max-shard-gb, tokenizer files copied). The merge computes the merged weight in f32 and casts
// once. An adapter whose update depends on the input (SMoRA's router) cannot be merged: the error
// says why.
//
//   mlr-merge --model /models/Llama-2-7b-hf --adapter runs/lora-7b/final --out merged/ [--dtype bf16]
#include <filesystem>
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "llama/model.h"
#include "llama/safetensors.h"
#include "multilora/inject.h"
#include "base/atomic_file.h"
#include "tensor/error.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"mlr-merge: merge an adapter (LoRA, MultiLoRA, DoRA, ...) into its base model"};
  std::string model_dir, adapter_dir, out_dir, dtype_name_arg = "f32";
  double max_shard_gb = 5.0;
  app.add_option("--model", model_dir, "base checkpoint directory")->required();
  app.add_option("--adapter", adapter_dir, "adapter directory (adapter_config.json + adapter_model.safetensors)")->required();
  app.add_option("--out", out_dir, "output checkpoint directory")->required();
  app.add_option("--dtype", dtype_name_arg, "dtype of the merged weights: f32, bf16 or f16");
  app.add_option("--max-shard-gb", max_shard_gb, "largest safetensors shard, in GB (10^9 bytes)");
  CLI11_PARSE(app, argc, argv);
  try {
    const mlr::DType dtype = mlr::parse_dtype(dtype_name_arg);
    auto model = mlr::LlamaForCausalLM::from_pretrained(model_dir, dtype);
    const auto adapters = mlr::inject_adapter_from_file(*model, adapter_dir);
    mlr::merge_adapters(*model);
    const auto tensors = mlr::merged_base_state_dict(*model);
    fs::create_directories(out_dir);
    const auto files = mlr::save_sharded(out_dir, tensors, static_cast<uint64_t>(max_shard_gb * 1e9));
    mlr::atomic_write_file(fs::path(out_dir) / "config.json",
                           mlr::llama_config_to_json(model->config(), dtype).dump(2) + "\n");
    for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "generation_config.json"}) {
      const fs::path src = fs::path(model_dir) / name;
      if (fs::exists(src)) fs::copy_file(src, fs::path(out_dir) / name, fs::copy_options::overwrite_existing);
    }
    std::cout << "merged " << adapters.size() << " adapted modules into " << out_dir << " (" << files.size()
              << " safetensors file" << (files.size() == 1 ? "" : "s") << ")\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

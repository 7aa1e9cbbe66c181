#include "train/memory_plan.h"

#include <map>
#include <ostream>

#include <fmt/format.h>

#include "data/config.h"
#include "dist/memory_plan.h"
#include "llama/config.h"
#include "multilora/registry.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

// The [out, in] shape of a decoder layer's linear module by its name.
std::pair<int64_t, int64_t> linear_shape(const LlamaConfig& m, const std::string& module) {
  const int64_t q = m.num_attention_heads * m.head_dim, kv = m.num_key_value_heads * m.head_dim;
  if (module == "q_proj") return {q, m.hidden_size};
  if (module == "k_proj" || module == "v_proj") return {kv, m.hidden_size};
  if (module == "o_proj") return {m.hidden_size, q};
  if (module == "gate_proj" || module == "up_proj") return {m.intermediate_size, m.hidden_size};
  if (module == "down_proj") return {m.hidden_size, m.intermediate_size};
  throw Error(fmt::format("mlr-train --plan: adapter.target_modules names '{}', not a linear module of a LLaMA decoder "
                          "layer (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
                          module));
}

int64_t layer_parameters(const LlamaConfig& m) {
  int64_t n = 0;
  for (const char* module : {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}) {
    const auto [out, in] = linear_shape(m, module);
    n += out * in;
  }
  const int64_t q = m.num_attention_heads * m.head_dim, kv = m.num_key_value_heads * m.head_dim;
  if (m.qkv_bias) n += q + 2 * kv;
  if (m.o_proj_bias) n += m.hidden_size;
  if (m.mlp_bias) n += 2 * m.intermediate_size + m.hidden_size;
  return n + 2 * m.hidden_size;  // the two RMSNorm weights
}

std::string gib(double bytes) { return fmt::format("{:.2f} GiB", bytes / double(int64_t{1} << 30)); }

}  // namespace

void print_memory_plan(const TrainConfig& config, int64_t world_size, double device_bytes, std::ostream& out) {
  MLR_CHECK(world_size >= 1, "mlr-train --plan: world size {}, expected >= 1", world_size);
  const LlamaConfig m = LlamaConfig::load(config.model.path);
  const data::DataConfig data_config = data::parse_data_config(config.data_yaml, "data", config.base_dir);
  dist::PlanInputs in;
  in.world_size = world_size;
  in.layers = m.num_hidden_layers;
  in.layer_parameters = layer_parameters(m);
  in.hidden = m.hidden_size;
  in.kv_hidden = m.num_key_value_heads * m.head_dim;
  in.intermediate = m.intermediate_size;
  in.vocab = m.vocab_size;
  in.parameters = in.layers * in.layer_parameters + m.vocab_size * m.hidden_size * (m.tie_word_embeddings ? 1 : 2) +
                  m.hidden_size;
  in.compute_bytes = config.train.precision == "f32" ? 4 : 2;
  in.tokens_per_micro_batch = data_config.loader.batch_rows * data_config.loader.pack.seq_len;
  in.activation_checkpointing = config.train.activation_checkpointing;
  in.bucket_bytes = static_cast<int64_t>(config.train.grad_bucket_mib * double(int64_t{1} << 20));
  in.full_finetuning = config.adapter.type == "full";
  std::string what = "full fine-tuning";
  if (!in.full_finetuning) {
    // One adapter per distinct shape, built around a weight that is one value broadcast (no
    // memory): its trainable parameters, times the modules of that shape.
    const DType weight_dtype = in.compute_bytes == 4 ? DType::f32 : DType::bf16;
    std::map<std::pair<int64_t, int64_t>, std::pair<int64_t, int64_t>> by_shape;  // shape -> (parameters, bytes)
    const int64_t layers = config.adapter.layers.empty() ? m.num_hidden_layers
                                                         : static_cast<int64_t>(config.adapter.layers.size());
    for (const std::string& module : config.adapter.target_modules) {
      const auto shape = linear_shape(m, module);
      auto it = by_shape.find(shape);
      if (it == by_shape.end()) {
        Generator gen(1);
        Variable weight(zeros({1, 1}, weight_dtype).expand({shape.first, shape.second}));
        const auto adapter = config.adapter.settings->make_adapter_awaiting_base_weight(weight, Variable(), gen, 0);
        int64_t n = 0;
        for (const Variable& p : adapter->parameters()) n += p.numel();
        it = by_shape.emplace(shape, std::make_pair(n, static_cast<int64_t>(dtype_size(adapter->adapter_dtype())))).first;
      }
      in.adapter_parameters += layers * it->second.first;
      in.adapter_bytes = it->second.second;
    }
    what = fmt::format("{} on {} ({:.2f} M trainable parameters)", config.adapter.type,
                       fmt::join(config.adapter.target_modules, ", "), in.adapter_parameters / 1e6);
  }
  out << fmt::format("memory plan per rank: {} ({:.2f} B parameters, {} layers), {}, {}, {} x {} tokens per "
                     "micro-batch, activation checkpointing {}, {} rank{}\n",
                     config.model.path, in.parameters / 1e9, in.layers, what, config.train.precision,
                     data_config.loader.batch_rows, data_config.loader.pack.seq_len,
                     in.activation_checkpointing ? "on" : "off", world_size, world_size > 1 ? "s" : "");
  const std::vector<dist::PlanRow> rows = dist::plan_memory(in);
  out << fmt::format("  {:<18} {:>22} {:>22}\n", "", "replicated", "sharded");
  for (const dist::PlanRow& r : rows)
    out << fmt::format("  {:<18} {:>22} {:>22}\n", r.what, gib(r.replicated), gib(r.sharded));
  const auto fits = [&](double b) { return b <= device_bytes ? std::string("yes") : std::string("no"); };
  out << fmt::format("  {:<18} {:>22} {:>22}\n", fmt::format("fits {}?", gib(device_bytes)), fits(rows.back().replicated),
                     fits(rows.back().sharded));
  out << "  (replicated: every rank holds everything; sharded: AdamW state 1/world (train.zero_stage: 1), frozen "
         "base weights 1/world plus two gathered layers (train.shard_frozen_base: true, with activation "
         "checkpointing; each rank reads only its 1/world of them from the files, so loading needs no more), "
         "gradients 1/world (train.zero_stage: 2); not counted: CUDA context, cuBLASLt workspaces, NCCL buffers, "
         "fragmentation)\n";
}

}  // namespace mlr

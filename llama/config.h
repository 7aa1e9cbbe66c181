// LlamaConfig: the architecture hyper-parameters of a LLaMA-family checkpoint, read from the
// Hugging Face config.json (LLaMA 1/2/3, TinyLlama, SmolLM, Qwen2), with transformers' defaults for
// the keys a config may omit.
//
// RoPE inverse frequencies, for d = rotary dim (head_dim), i = 0 .. d/2-1, as transformers' rope
// init functions compute them (in f32):
//   default:  inv[i] = 1 / theta^(2i/d)
//   linear:   inv[i] / factor
//   llama3:   wavelen = 2*pi / inv[i];  lo = L / low_freq_factor, hi = L / high_freq_factor
//             (L = original_max_position_embeddings)
//             wavelen < hi                 -> inv[i]
//             wavelen > lo                 -> inv[i] / factor
//             otherwise, with s = (L / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor):
//                                          -> (1 - s) * inv[i] / factor + s * inv[i]
// The attention scaling of these three types is 1.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "tensor/dtype.h"

namespace mlr {

struct RopeScaling {
  enum class Type { none, linear, llama3 };
  Type type = Type::none;
  double factor = 1.0;
  // llama3 only
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct LlamaConfig {
  std::string model_type = "llama";  // "llama", "qwen2", ...
  int64_t hidden_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // = num_attention_heads when absent (multi-head attention)
  int64_t head_dim = 0;             // = hidden_size / num_attention_heads when absent
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  // Biases of the attention projections. LLaMA's attention_bias puts one on q, k, v and o; Qwen2
  // has q/k/v biases and none on o, without any key saying so.
  bool qkv_bias = false;
  bool o_proj_bias = false;
  bool mlp_bias = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // config.json may give one id or a list
  std::optional<int64_t> pad_token_id;
  std::optional<DType> dtype;  // "torch_dtype" (or "dtype" in newer transformers), when given

  // `source` names the file in error messages.
  static LlamaConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  // `path`: a config.json or the checkpoint directory holding one.
  static LlamaConfig load(const std::string& path);

  int64_t kv_groups() const { return num_attention_heads / num_key_value_heads; }
};

// RoPE inverse frequencies (head_dim / 2 values), including linear and llama3 scaling (see top).
std::vector<float> rope_inv_freq(const LlamaConfig& config);

}  // namespace mlr

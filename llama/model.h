// LlamaForCausalLM: the LLaMA-family decoder (LLaMA 1/2/3, TinyLlama, SmolLM, Qwen2) with Hugging
// Face's module tree and parameter names, so a checkpoint directory from the Hub loads 1:1:
//
//   model.embed_tokens.weight                           [vocab, hidden]
//   model.layers.N.input_layernorm.weight               [hidden]
//   model.layers.N.self_attn.{q,k,v}_proj.weight        [heads*head_dim | kv_heads*head_dim, hidden]
//   model.layers.N.self_attn.{q,k,v}_proj.bias          (attention_bias, or Qwen2)
//   model.layers.N.self_attn.o_proj.weight              [hidden, heads*head_dim]  (+ bias: attention_bias)
//   model.layers.N.post_attention_layernorm.weight      [hidden]
//   model.layers.N.mlp.{gate,up}_proj.weight            [intermediate, hidden]
//   model.layers.N.mlp.down_proj.weight                 [hidden, intermediate]
//   model.norm.weight                                   [hidden]
//   lm_head.weight                                      [vocab, hidden]   (absent when tied)
//
// One layer, as transformers computes it:
//   h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n))),  n = input_layernorm(x)
//   y = h + down_proj(silu(gate_proj(m)) * up_proj(m)),                    m = post_attention_layernorm(h)
// with causal grouped-query attention (query head h reads key/value head h / (heads / kv_heads)),
// scale 1/sqrt(head_dim), and RoPE in the rotate_half layout with rope_inv_freq(config).
//
// The projections sit in UnaryModule slots, so an adapter can take a Linear's place
// (Module::replace_module("model.layers.0.self_attn.q_proj", adapter)).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "autograd/functions.h"
#include "llama/config.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace mlr {

// One forward pass's inputs. Only input_ids is required.
struct LlamaBatch {
  Tensor input_ids;       // [B, S], i32 or i64
  // [B, S], 1 for real tokens and 0 for padding (any integer or bool dtype). Each row's real tokens
  // must be contiguous (left or right padding). Real tokens attend only to real tokens; outputs at
  // padded positions are unspecified (transformers' differ too), so no loss may read them: labels
  // must be -100 on padding and on the first real token after left padding (predicted from a pad).
  Tensor attention_mask;
  // [B, S] or [S]: rotary positions. Default: 0..S-1 in every row (as transformers' forward, even
  // with left padding), or restarting at 0 in every document of a packed row.
  Tensor position_ids;
  // [B, S]: the loss is mean cross-entropy of logits[:, t] against labels[:, t + 1] over the pairs
  // whose label is not -100 (transformers' shift).
  Tensor labels;
  // Packed documents in one row (B == 1): cumulative lengths [0, l1, l1+l2, ..., S] (i32 or i64).
  // Attention stays within a document. Not combinable with attention_mask. The label of each
  // document's first token is the caller's to set to -100 (else the previous document's last
  // token is trained to predict it).
  Tensor cu_seqlens;
};

struct CausalLMOutput {
  Variable logits;  // [B, S, vocab]
  Variable loss;    // scalar; undefined without labels
};

// Keys (after RoPE) and values of the positions seen so far, for incremental decoding (inference
// only). Position t of row b holds a real token when key_valid[b, t]; left padding is not.
struct KVCache {
  KVCache(const LlamaConfig& config, int64_t batch, int64_t capacity, DType dtype, Device device);
  std::vector<Tensor> keys, values;  // per layer [batch, capacity, kv_heads, head_dim]
  Tensor key_valid;                  // bool [batch, capacity]
  int64_t length = 0;                // positions filled
  int64_t batch() const { return key_valid.size(0); }
  int64_t capacity() const { return key_valid.size(1); }
};

// Per-forward tensors every layer reads: rotary tables and the attention layout.
struct LlamaAttentionContext {
  Tensor cos, sin;      // [S, head_dim/2] or [B, S, head_dim/2], f32
  Tensor cu_seqlens;    // over the flattened B*S tokens when the batch is packed or padded
  bool flatten = false; // attention runs on [1, B*S, ...] with cu_seqlens
  // Incremental decoding: the new tokens' keys and values go to positions [length, length + S)
  // of the cache, and attention reads every valid cached position up to each query's own.
  KVCache* cache = nullptr;
};

// Attention of new queries over cached keys and values, computed with plain tensor ops in f32 (no
// gradient). q [B, S, H, D]; keys, values [B, T, Hkv, D]; key_valid bool [B, T]. Query i sits at
// position offset + i and reads key j when j <= offset + i and key_valid[b, j]; a query with no
// such key gets the mean of all values (as transformers' additive finite mask gives). -> [B, S, H*D]
Tensor cached_attention(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& key_valid,
                        int64_t offset, double scale);

class LlamaAttention : public Module {
 public:
  LlamaAttention(const LlamaConfig& config, int64_t layer_index, Generator* gen, ParamOptions options);
  Variable forward(const Variable& x, const LlamaAttentionContext& ctx);
  ChildRef<UnaryModule> q_proj, k_proj, v_proj, o_proj;

 private:
  int64_t layer_index_, heads_, kv_heads_, head_dim_;
};

class LlamaMLP : public Module {
 public:
  LlamaMLP(const LlamaConfig& config, Generator* gen, ParamOptions options);
  Variable forward(const Variable& x);
  ChildRef<UnaryModule> gate_proj, up_proj, down_proj;
};

class LlamaDecoderLayer : public Module {
 public:
  LlamaDecoderLayer(const LlamaConfig& config, int64_t layer_index, Generator* gen, ParamOptions options);
  Variable forward(const Variable& x, const LlamaAttentionContext& ctx);
  ChildRef<LlamaAttention> self_attn;
  ChildRef<LlamaMLP> mlp;
  ChildRef<UnaryModule> input_layernorm, post_attention_layernorm;
};

// The decoder stack without the output layer ("model." in checkpoints).
class LlamaModel : public Module {
 public:
  LlamaModel(const LlamaConfig& config, Generator* gen, ParamOptions options);
  // Hidden states after the final norm, [B, S, hidden].
  Variable forward(const Tensor& input_ids, const LlamaAttentionContext& ctx);
  ChildRef<Embedding> embed_tokens;
  ChildRef<ModuleList> layers;
  ChildRef<UnaryModule> norm;
  // Recompute each layer during backward instead of keeping its activations (autograd/checkpoint.h).
  bool gradient_checkpointing = false;
  // Called around every run of decoder layer i, recomputations included (dist/sharded_base.h
  // gathers the layer's sharded weights before and releases them after); unset: nothing.
  std::function<void(int64_t)> before_layer, after_layer;

 private:
  std::vector<ChildRef<LlamaDecoderLayer>> layer_refs_;
};

class LlamaForCausalLM : public Module {
 public:
  // Random initial weights from `gen` (the default generator when null), or none with
  // options.skip_init (a checkpoint is loaded next).
  explicit LlamaForCausalLM(LlamaConfig config, Generator* gen = nullptr, ParamOptions options = {});

  // Reads config.json and the weights (model.safetensors, or the shards named by
  // model.safetensors.index.json) from `dir`, converted to `dtype` (default: f32) on `device`.
  // Strict: missing, unexpected and mis-shaped tensors are one error. A tied model ignores an
  // lm_head.weight in the files; rotary_emb.inv_freq buffers of old checkpoints are ignored.
  static std::shared_ptr<LlamaForCausalLM> from_pretrained(const std::string& dir, DType dtype = DType::f32,
                                                           Device device = Device::cpu());
  // Weights loaded only in part (dist/sharded_base.h: each rank reads its chunk of every frozen
  // decoder weight). A parameter `selects` picks gets no memory (it holds a zero broadcast to its
  // shape, ParamOptions::unallocated) and is handed to `load` with a reader of its stored tensor:
  // read(begin, count) gives elements [begin, begin + count) of the flattened tensor in the file's
  // dtype on the CPU, touching only those bytes of the file. Names, shapes and strictness are
  // checked as for a whole load before any `load` call.
  struct PartialLoad {
    std::function<bool(const std::string& name)> selects;
    std::function<void(const std::string& name, const Variable& param,
                       const std::function<Tensor(int64_t begin, int64_t count)>& read)>
        load;
  };
  static std::shared_ptr<LlamaForCausalLM> from_pretrained(const std::string& dir, DType dtype, Device device,
                                                           const PartialLoad& partial);
  // Writes config.json and the weights as transformers does (one model.safetensors, or shards of
  // at most max_shard_bytes plus the index).
  void save_pretrained(const std::string& dir, uint64_t max_shard_bytes = 5'000'000'000ull) const;

  CausalLMOutput forward(const LlamaBatch& batch);
  // Incremental decoding (no gradient): runs the new tokens input_ids [B, S] at position_ids
  // [B, S] against `cache`, appends their keys and values (valid where attention_mask [B, S] is
  // 1; undefined: all valid) and returns their logits [B, S, vocab].
  Tensor forward_cached(const Tensor& input_ids, const Tensor& position_ids, const Tensor& attention_mask,
                        KVCache& cache);
  // The rotary tables and attention layout forward() derives from a batch (exposed for generation
  // and tests).
  LlamaAttentionContext attention_context(const LlamaBatch& batch) const;
  // logits [B, S, V] at the final hidden states [B, S, hidden].
  Variable lm_logits(const Variable& hidden);

  const LlamaConfig& config() const { return config_; }
  ChildRef<LlamaModel> model;
  // Null when the embeddings are tied (logits use model.embed_tokens.weight).
  ChildRef<UnaryModule> lm_head;
  void set_gradient_checkpointing(bool on) { model->gradient_checkpointing = on; }

 private:
  LlamaConfig config_;
  Tensor inv_freq_;  // f32 [head_dim / 2]
};

// The loss of a causal LM as transformers computes it: targets are labels shifted left by one
// (the last position of each row gets -100), mean cross-entropy over the non-ignored targets.
Variable causal_lm_loss(const Variable& logits, const Tensor& labels);

// config.json contents for `config` (the keys LlamaConfig::from_json reads back), with `dtype`.
nlohmann::json llama_config_to_json(const LlamaConfig& config, DType dtype);

}  // namespace mlr

#include "llama/model.h"

#include <cmath>
#include <filesystem>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "autograd/checkpoint.h"
#include "base/atomic_file.h"
#include "llama/safetensors.h"
#include "tensor/ops.h"

namespace fs = std::filesystem;

namespace mlr {

namespace {

std::shared_ptr<UnaryModule> make_linear(int64_t in, int64_t out, bool bias, Generator* gen,
                                         const ParamOptions& options) {
  return std::make_shared<Linear>(in, out, bias, gen, options);
}

bool is_integer_like(DType t) { return t == DType::i32 || t == DType::i64 || t == DType::boolean; }

// The transformers name of a dtype ("float32", "bfloat16", "float16", "float64").
const char* hf_dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "float32";
    case DType::bf16: return "bfloat16";
    case DType::f16: return "float16";
    case DType::f64: return "float64";
    default: throw Error(fmt::format("llama: dtype {} is not a floating dtype a model can be saved in", t));
  }
}

}  // namespace

// ------------------------------------------------------------------ layers

KVCache::KVCache(const LlamaConfig& c, int64_t batch, int64_t capacity, DType dtype, Device device) {
  MLR_CHECK(batch > 0 && capacity > 0, "KVCache: batch {} and capacity {} must be positive", batch, capacity);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    keys.push_back(zeros({batch, capacity, c.num_key_value_heads, c.head_dim}, {dtype, device}));
    values.push_back(zeros({batch, capacity, c.num_key_value_heads, c.head_dim}, {dtype, device}));
  }
  key_valid = zeros({batch, capacity}, {DType::boolean, device});
}

Tensor cached_attention(const Tensor& q, const Tensor& keys, const Tensor& values, const Tensor& key_valid,
                        int64_t offset, double scale) {
  const bool fits = q.dim() == 4 && keys.dim() == 4 && values.shape() == keys.shape() &&
                    keys.size(0) == q.size(0) && keys.size(3) == q.size(3) && q.size(2) % keys.size(2) == 0 &&
                    key_valid.shape() == Shape({keys.size(0), keys.size(1)}) && offset >= 0 &&
                    offset + q.size(1) <= keys.size(1);
  MLR_CHECK(fits,
            "cached_attention: q {}, keys {}, values {}, key_valid {}, offset {} do not fit together",
            shape_str(q.shape()), shape_str(keys.shape()), shape_str(values.shape()), shape_str(key_valid.shape()),
            offset);
  const int64_t batch = q.size(0), seq = q.size(1), heads = q.size(2), dim = q.size(3);
  const int64_t total = keys.size(1), kv_heads = keys.size(2), groups = heads / kv_heads;
  const Device device = q.device();
  // Query head h = kv * groups + g reads key/value head kv: [B, Hkv, G, S, D] x [B, Hkv, 1, D, T].
  Tensor q5 = q.to(DType::f32).reshape({batch, seq, kv_heads, groups, dim}).permute({0, 2, 3, 1, 4});
  Tensor k5 = keys.to(DType::f32).permute({0, 2, 3, 1}).unsqueeze(2);
  Tensor v5 = values.to(DType::f32).permute({0, 2, 1, 3}).unsqueeze(2);
  Tensor scores = mul(matmul(q5, k5), scale);  // [B, Hkv, G, S, T]
  Tensor key_pos = arange(total, {DType::i64, device}).reshape({1, total});
  Tensor query_pos = add(arange(seq, {DType::i64, device}), static_cast<double>(offset)).reshape({seq, 1});
  Tensor allowed = logical_and(le(key_pos, query_pos).unsqueeze(0), key_valid.to(DType::boolean).unsqueeze(1));
  scores = masked_fill(scores, logical_not(allowed.reshape({batch, 1, 1, seq, total})),
                       static_cast<double>(std::numeric_limits<float>::lowest()));
  Tensor out = matmul(softmax(scores, -1), v5);  // [B, Hkv, G, S, D]
  return out.permute({0, 3, 1, 2, 4}).reshape({batch, seq, heads * dim});
}

LlamaAttention::LlamaAttention(const LlamaConfig& c, int64_t layer_index, Generator* gen, ParamOptions options)
    : Module("LlamaAttention"), layer_index_(layer_index), heads_(c.num_attention_heads),
      kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim) {
  q_proj = register_module("q_proj", make_linear(c.hidden_size, heads_ * head_dim_, c.qkv_bias, gen, options));
  k_proj = register_module("k_proj", make_linear(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias, gen, options));
  v_proj = register_module("v_proj", make_linear(c.hidden_size, kv_heads_ * head_dim_, c.qkv_bias, gen, options));
  o_proj = register_module("o_proj", make_linear(heads_ * head_dim_, c.hidden_size, c.o_proj_bias, gen, options));
}

Variable LlamaAttention::forward(const Variable& x, const LlamaAttentionContext& ctx) {
  const int64_t batch = x.size(0), seq = x.size(1);
  Variable q = rope(q_proj->forward(x).view({batch, seq, heads_, head_dim_}), ctx.cos, ctx.sin);
  Variable k = rope(k_proj->forward(x).view({batch, seq, kv_heads_, head_dim_}), ctx.cos, ctx.sin);
  Variable v = v_proj->forward(x).view({batch, seq, kv_heads_, head_dim_});
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim_));
  if (ctx.cache) {
    KVCache& cache = *ctx.cache;
    const int64_t start = cache.length, end = cache.length + seq;
    Tensor keys = cache.keys.at(static_cast<size_t>(layer_index_));
    Tensor values = cache.values.at(static_cast<size_t>(layer_index_));
    keys.narrow(1, start, seq).copy_(k.data());
    values.narrow(1, start, seq).copy_(v.data());
    Tensor o = cached_attention(q.data(), keys.narrow(1, 0, end), values.narrow(1, 0, end),
                                cache.key_valid.narrow(1, 0, end), start, scale);
    return o_proj->forward(o.to(x.dtype()));
  }
  if (ctx.flatten) {
    // Padded rows run as one packed row whose documents are the rows' real and padded spans.
    q = q.reshape({1, batch * seq, heads_, head_dim_});
    k = k.reshape({1, batch * seq, kv_heads_, head_dim_});
    v = v.reshape({1, batch * seq, kv_heads_, head_dim_});
  }
  Variable o = attention(q, k, v, scale, ctx.cu_seqlens);
  return o_proj->forward(o.reshape({batch, seq, heads_ * head_dim_}));
}

LlamaMLP::LlamaMLP(const LlamaConfig& c, Generator* gen, ParamOptions options) : Module("LlamaMLP") {
  gate_proj = register_module("gate_proj", make_linear(c.hidden_size, c.intermediate_size, c.mlp_bias, gen, options));
  up_proj = register_module("up_proj", make_linear(c.hidden_size, c.intermediate_size, c.mlp_bias, gen, options));
  down_proj = register_module("down_proj", make_linear(c.intermediate_size, c.hidden_size, c.mlp_bias, gen, options));
}

Variable LlamaMLP::forward(const Variable& x) {
  return down_proj->forward(swiglu(gate_proj->forward(x), up_proj->forward(x)));
}

LlamaDecoderLayer::LlamaDecoderLayer(const LlamaConfig& c, int64_t layer_index, Generator* gen,
                                     ParamOptions options)
    : Module("LlamaDecoderLayer") {
  self_attn = register_module("self_attn", std::make_shared<LlamaAttention>(c, layer_index, gen, options));
  mlp = register_module("mlp", std::make_shared<LlamaMLP>(c, gen, options));
  input_layernorm = register_module<UnaryModule>("input_layernorm",
                                                 std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, options));
  post_attention_layernorm = register_module<UnaryModule>(
      "post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, options));
}

Variable LlamaDecoderLayer::forward(const Variable& x, const LlamaAttentionContext& ctx) {
  Variable h = add(x, self_attn->forward(input_layernorm->forward(x), ctx));
  return add(h, mlp->forward(post_attention_layernorm->forward(h)));
}

LlamaModel::LlamaModel(const LlamaConfig& c, Generator* gen, ParamOptions options) : Module("LlamaModel") {
  embed_tokens = register_module("embed_tokens", std::make_shared<Embedding>(c.vocab_size, c.hidden_size, gen, options));
  auto list = std::make_shared<ModuleList>();
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    layer_refs_.push_back(list->push_back(std::make_shared<LlamaDecoderLayer>(c, i, gen, options)));
  layers = register_module("layers", list);
  norm = register_module<UnaryModule>("norm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps, options));
}

Variable LlamaModel::forward(const Tensor& input_ids, const LlamaAttentionContext& ctx) {
  Variable h = embed_tokens->forward(input_ids);
  for (size_t i = 0; i < layer_refs_.size(); ++i) {
    LlamaDecoderLayer* layer = layer_refs_[i].get();
    // The context is captured by value: a checkpointed layer is rerun during backward, after this
    // returns; the hooks run around every run.
    auto run = [this, layer, ctx, i](const Variable& in) {
      if (before_layer) before_layer(static_cast<int64_t>(i));
      Variable out = layer->forward(in, ctx);
      if (after_layer) after_layer(static_cast<int64_t>(i));
      return out;
    };
    h = gradient_checkpointing && GradMode::is_enabled() ? checkpoint(run, h) : run(h);
  }
  return norm->forward(h);
}

// ------------------------------------------------------------------ the causal LM

LlamaForCausalLM::LlamaForCausalLM(LlamaConfig config, Generator* gen, ParamOptions options)
    : Module("LlamaForCausalLM"), config_(std::move(config)) {
  const LlamaConfig& c = config_;
  MLR_CHECK(c.hidden_size > 0 && c.num_hidden_layers > 0 && c.num_attention_heads > 0 && c.num_key_value_heads > 0 &&
                c.head_dim > 0 && c.head_dim % 2 == 0 && c.intermediate_size > 0 && c.vocab_size > 0 &&
                c.num_attention_heads % c.num_key_value_heads == 0,
            "LlamaForCausalLM: invalid config (hidden {}, layers {}, heads {}, kv heads {}, head_dim {}, "
            "intermediate {}, vocab {})", c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
            c.num_key_value_heads, c.head_dim, c.intermediate_size, c.vocab_size);
  model = register_module("model", std::make_shared<LlamaModel>(c, gen, options));
  if (!c.tie_word_embeddings)
    lm_head = register_module("lm_head", make_linear(c.hidden_size, c.vocab_size, false, gen, options));
  std::vector<float> inv = rope_inv_freq(c);
  inv_freq_ = from_vector(inv, {static_cast<int64_t>(inv.size())});
}

Variable LlamaForCausalLM::lm_logits(const Variable& hidden) {
  if (lm_head) return lm_head->forward(hidden);
  return linear(hidden, model->embed_tokens->weight());
}

LlamaAttentionContext LlamaForCausalLM::attention_context(const LlamaBatch& b) const {
  const char* op = "LlamaForCausalLM";
  const Tensor& ids = b.input_ids;
  MLR_CHECK(ids.defined() && ids.dim() == 2 && (ids.dtype() == DType::i32 || ids.dtype() == DType::i64),
            "{}: input_ids must be [batch, seq] i32 or i64, got {} {}", op, ids.defined() ? shape_str(ids.shape()) : "undefined",
            ids.defined() ? dtype_name(ids.dtype()) : "");
  const int64_t batch = ids.size(0), seq = ids.size(1);
  const Device device = model->embed_tokens->weight().device();
  LlamaAttentionContext ctx;

  // Attention layout.
  std::vector<int64_t> doc_starts;  // start of each packed document, when cu_seqlens is given
  if (b.cu_seqlens.defined()) {
    MLR_CHECK(!b.attention_mask.defined(), "{}: cu_seqlens (packed documents) and attention_mask cannot be combined",
              op);
    MLR_CHECK(batch == 1, "{}: cu_seqlens needs packed input with batch 1, got input_ids {}", op,
              shape_str(ids.shape()));
    MLR_CHECK(b.cu_seqlens.dim() == 1 && (b.cu_seqlens.dtype() == DType::i32 || b.cu_seqlens.dtype() == DType::i64),
              "{}: cu_seqlens must be 1-d i32 or i64, got {} {}", op, shape_str(b.cu_seqlens.shape()),
              b.cu_seqlens.dtype());
    std::vector<int64_t> cu = b.cu_seqlens.to_vector<int64_t>();
    MLR_CHECK(cu.size() >= 2 && cu.front() == 0 && cu.back() == seq, "{}: cu_seqlens [{}] must run from 0 to seq {}",
              op, fmt::join(cu, ", "), seq);
    for (size_t i = 1; i < cu.size(); ++i)
      MLR_CHECK(cu[i] >= cu[i - 1], "{}: cu_seqlens [{}] decreases at entry {}", op, fmt::join(cu, ", "), i);
    doc_starts.assign(cu.begin(), cu.end() - 1);
    ctx.cu_seqlens = b.cu_seqlens.to(device, DType::i32);
  } else if (b.attention_mask.defined()) {
    const Tensor& m = b.attention_mask;
    MLR_CHECK(m.shape() == ids.shape() && is_integer_like(m.dtype()),
              "{}: attention_mask must be an integer or bool tensor shaped like input_ids {}, got {} {}", op,
              shape_str(ids.shape()), shape_str(m.shape()), m.dtype());
    std::vector<int64_t> mask = m.to_vector<int64_t>();
    std::vector<int32_t> cu = {0};
    bool any_padding = false;
    for (int64_t r = 0; r < batch; ++r) {
      const int64_t* row = mask.data() + r * seq;
      int64_t first = -1, last = -1;
      for (int64_t t = 0; t < seq; ++t) {
        MLR_CHECK(row[t] == 0 || row[t] == 1, "{}: attention_mask[{}, {}] is {}, expected 0 or 1", op, r, t, row[t]);
        if (row[t] == 1) {
          if (first < 0) first = t;
          MLR_CHECK(last < 0 || last == t - 1,
                    "{}: attention_mask row {} has padding between real tokens (0 at positions {}..{}); only left "
                    "and right padding are supported", op, r, last + 1, t - 1);
          last = t;
        }
      }
      // Segments: [row start, first real), [first real, last real], (last real, row end].
      const int64_t base = r * seq;
      for (int64_t boundary : {first < 0 ? seq : first, last < 0 ? seq : last + 1, seq}) {
        const int64_t at = base + boundary;
        if (at > cu.back()) cu.push_back(static_cast<int32_t>(at));
      }
      any_padding = any_padding || first != 0 || last != seq - 1;
    }
    if (any_padding) {
      ctx.flatten = batch > 1;
      ctx.cu_seqlens = from_vector(cu, {static_cast<int64_t>(cu.size())}).to(device);
    }
  }

  // Rotary positions.
  Tensor positions;
  if (b.position_ids.defined()) {
    const Tensor& p = b.position_ids;
    MLR_CHECK((p.shape() == ids.shape() || p.shape() == Shape{seq}) && (p.dtype() == DType::i32 || p.dtype() == DType::i64),
              "{}: position_ids must be i32/i64 shaped [batch, seq] {} or [seq], got {} {}", op, shape_str(ids.shape()),
              shape_str(p.shape()), p.dtype());
    positions = p.to(DType::i64).contiguous();
  } else if (!doc_starts.empty()) {
    std::vector<int64_t> pos(static_cast<size_t>(seq));
    for (size_t d = 0; d < doc_starts.size(); ++d) {
      const int64_t end = d + 1 < doc_starts.size() ? doc_starts[d + 1] : seq;
      for (int64_t t = doc_starts[d]; t < end; ++t) pos[static_cast<size_t>(t)] = t - doc_starts[d];
    }
    positions = from_vector(pos, {seq});
  } else {
    positions = arange(seq);
  }
  rope_tables(positions.to(device), inv_freq_.to(device), ctx.cos, ctx.sin);
  return ctx;
}

CausalLMOutput LlamaForCausalLM::forward(const LlamaBatch& batch) {
  LlamaAttentionContext ctx = attention_context(batch);
  Tensor ids = batch.input_ids.to(model->embed_tokens->weight().device());
  CausalLMOutput out;
  out.logits = lm_logits(model->forward(ids, ctx));
  if (batch.labels.defined()) {
    MLR_CHECK(batch.labels.shape() == batch.input_ids.shape(),
              "LlamaForCausalLM: labels {} must be shaped like input_ids {}", shape_str(batch.labels.shape()),
              shape_str(batch.input_ids.shape()));
    out.loss = causal_lm_loss(out.logits, batch.labels);
  }
  return out;
}

Tensor LlamaForCausalLM::forward_cached(const Tensor& input_ids, const Tensor& position_ids,
                                        const Tensor& attention_mask, KVCache& cache) {
  const char* op = "LlamaForCausalLM::forward_cached";
  MLR_CHECK(input_ids.defined() && input_ids.dim() == 2 && input_ids.size(0) == cache.batch(),
            "{}: input_ids must be [batch {}, seq], got {}", op, cache.batch(),
            input_ids.defined() ? shape_str(input_ids.shape()) : "undefined");
  const int64_t seq = input_ids.size(1);
  MLR_CHECK(cache.length + seq <= cache.capacity(), "{}: {} new tokens do not fit in the cache ({} of {} used)", op,
            seq, cache.length, cache.capacity());
  MLR_CHECK(cache.keys.size() == static_cast<size_t>(config_.num_hidden_layers),
            "{}: the cache has {} layers, the model {}", op, cache.keys.size(), config_.num_hidden_layers);
  MLR_CHECK(position_ids.defined() && position_ids.shape() == input_ids.shape(),
            "{}: position_ids must be shaped like input_ids {}", op, shape_str(input_ids.shape()));
  NoGradGuard no_grad;
  Tensor valid = cache.key_valid.narrow(1, cache.length, seq);
  if (attention_mask.defined()) {
    MLR_CHECK(attention_mask.shape() == input_ids.shape(), "{}: attention_mask {} must be shaped like input_ids {}",
              op, shape_str(attention_mask.shape()), shape_str(input_ids.shape()));
    valid.copy_(ne(attention_mask, 0.0));
  } else {
    valid.fill_(1.0);
  }
  LlamaBatch positions_only;
  positions_only.input_ids = input_ids;
  positions_only.position_ids = position_ids;
  LlamaAttentionContext ctx = attention_context(positions_only);
  ctx.cache = &cache;
  Tensor ids = input_ids.to(model->embed_tokens->weight().device());
  Tensor logits = lm_logits(model->forward(ids, ctx)).data();
  cache.length += seq;
  return logits;
}

Variable causal_lm_loss(const Variable& logits, const Tensor& labels) {
  MLR_CHECK(logits.dim() == 3 && labels.dim() == 2 && labels.size(0) == logits.size(0) &&
                labels.size(1) == logits.size(1) && (labels.dtype() == DType::i32 || labels.dtype() == DType::i64),
            "causal_lm_loss: logits [B, S, V] and i32/i64 labels [B, S] expected, got {} and {} {}",
            shape_str(logits.shape()), shape_str(labels.shape()), labels.dtype());
  const int64_t batch = logits.size(0), seq = logits.size(1), vocab = logits.size(2);
  // targets[:, t] = labels[:, t + 1]; the last position has nothing to predict.
  Tensor lab = labels.to(logits.device(), DType::i64);
  Tensor targets = cat(std::vector<Tensor>{lab.slice(1, 1, seq), full({batch, 1}, -100.0, {DType::i64, logits.device()})}, 1);
  return cross_entropy(logits.reshape({batch * seq, vocab}), targets.reshape({batch * seq}), -100, Reduction::mean);
}

// ------------------------------------------------------------------ checkpoints

nlohmann::json llama_config_to_json(const LlamaConfig& c, DType dtype) {
  nlohmann::json j;
  const bool qwen2 = c.model_type == "qwen2";
  j["architectures"] = {qwen2 ? "Qwen2ForCausalLM" : "LlamaForCausalLM"};
  j["model_type"] = c.model_type;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["head_dim"] = c.head_dim;
  j["vocab_size"] = c.vocab_size;
  j["hidden_act"] = "silu";
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  const RopeScaling& s = c.rope_scaling;
  if (s.type == RopeScaling::Type::linear) {
    j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", s.factor}};
  } else if (s.type == RopeScaling::Type::llama3) {
    j["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", s.factor},
                         {"low_freq_factor", s.low_freq_factor},
                         {"high_freq_factor", s.high_freq_factor},
                         {"original_max_position_embeddings", s.original_max_position_embeddings}};
  }
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (qwen2) {
    MLR_CHECK(c.qkv_bias && !c.o_proj_bias, "llama: a qwen2 config has q/k/v biases and none on o_proj");
  } else {
    // LLaMA's attention_bias puts a bias on all four projections; other mixes have no config key.
    MLR_CHECK(c.qkv_bias == c.o_proj_bias, "llama: a llama config cannot express q/k/v bias {} with o_proj bias {}",
              c.qkv_bias, c.o_proj_bias);
    j["attention_bias"] = c.qkv_bias;
  }
  j["mlp_bias"] = c.mlp_bias;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) j["eos_token_id"] = c.eos_token_ids[0];
  if (c.eos_token_ids.size() > 1) j["eos_token_id"] = c.eos_token_ids;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  j["torch_dtype"] = hf_dtype_name(dtype);
  return j;
}

std::shared_ptr<LlamaForCausalLM> LlamaForCausalLM::from_pretrained(const std::string& dir, DType dtype,
                                                                     Device device) {
  return from_pretrained(dir, dtype, device, PartialLoad{});
}

std::shared_ptr<LlamaForCausalLM> LlamaForCausalLM::from_pretrained(const std::string& dir, DType dtype, Device device,
                                                                     const PartialLoad& partial) {
  LlamaConfig config = LlamaConfig::load(dir);
  const bool in_parts = partial.selects != nullptr;
  MLR_CHECK(!in_parts || partial.load, "from_pretrained: {}: a partial load selects parameters but has no loader", dir);
  ParamOptions options;
  options.dtype = dtype;
  options.device = device;
  options.skip_init = true;
  options.unallocated = in_parts;  // each parameter gets its memory below, unless it is loaded in part
  auto m = std::make_shared<LlamaForCausalLM>(config, nullptr, options);
  std::vector<std::pair<std::string, Variable>> selected;
  std::set<std::string> selected_names;
  if (in_parts) {
    for (auto& [name, param] : m->named_parameters()) {
      if (partial.selects(name)) {
        selected.emplace_back(name, param);
        selected_names.insert(name);
      } else {
        param.set_data(empty(param.shape(), {dtype, device}));
      }
    }
  }
  // Views onto the mapped files; load_state_dict converts while copying into the parameters.
  const Checkpoint checkpoint = Checkpoint::open(dir);
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : checkpoint.names()) {
    const bool tied_head = config.tie_word_embeddings && name == "lm_head.weight";
    const bool inv_freq = name.size() >= 19 && name.compare(name.size() - 19, 19, "rotary_emb.inv_freq") == 0;
    if (!tied_head && !inv_freq && !selected_names.count(name)) tensors.emplace(name, checkpoint.get(name));
  }
  try {
    if (!in_parts) {
      m->load_state_dict(tensors);
      return m;
    }
    // The selected parameters are checked here (present, same shape), the others by load_state_dict.
    std::vector<std::string> missing, mis_shaped;
    for (const auto& [name, param] : selected) {
      if (!checkpoint.contains(name)) {
        missing.push_back(name);
      } else if (checkpoint.info(name).shape != param.shape()) {
        mis_shaped.push_back(fmt::format("{} (checkpoint {}, model {})", name, shape_str(checkpoint.info(name).shape),
                                         shape_str(param.shape())));
      }
    }
    MLR_CHECK(mis_shaped.empty(), "load_state_dict (LlamaForCausalLM):\n  {} with the wrong shape: {}",
              mis_shaped.size(), fmt::join(mis_shaped, ", "));
    const LoadStateDictResult result = m->load_state_dict(tensors, /*strict=*/false);
    for (const std::string& name : result.missing_keys)
      if (!selected_names.count(name)) missing.push_back(name);
    if (!missing.empty() || !result.unexpected_keys.empty()) {
      std::string msg = "load_state_dict (LlamaForCausalLM):";
      if (!missing.empty()) msg += fmt::format("\n  {} missing: {}", missing.size(), fmt::join(missing, ", "));
      if (!result.unexpected_keys.empty())
        msg += fmt::format("\n  {} unexpected: {}", result.unexpected_keys.size(), fmt::join(result.unexpected_keys, ", "));
      throw Error(msg);
    }
  } catch (const Error& e) {
    throw Error(fmt::format("from_pretrained: {}: {}", dir, std::string(e.what()).substr(5)));
  }
  for (const auto& entry : selected) {
    const std::string& name = entry.first;
    partial.load(name, entry.second, [&checkpoint, &name](int64_t begin, int64_t count) {
      return checkpoint.get_range(name, begin, count);
    });
  }
  return m;
}

void LlamaForCausalLM::save_pretrained(const std::string& dir, uint64_t max_shard_bytes) const {
  fs::create_directories(dir);
  const DType dtype = model->embed_tokens->weight().dtype();
  atomic_write_file(fs::path(dir) / "config.json", llama_config_to_json(config_, dtype).dump(2) + "\n");
  // Checkpoints hold CPU tensors in the model's dtype.
  std::vector<std::pair<std::string, Tensor>> tensors = ordered_state_dict();
  for (auto& [name, t] : tensors) t = t.cpu().contiguous();
  save_sharded(dir, tensors, max_shard_bytes);
}

}  // namespace mlr

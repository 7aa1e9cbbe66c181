#include "llama/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tensor/error.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mlr {

namespace {

// Typed access to config keys; every error names the file and the key.
struct Reader {
  const json& j;
  const std::string& source;

  const json* find(const json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() || it->is_null() ? nullptr : &*it;
  }
  [[noreturn]] void wrong(const std::string& key, const json& v, const char* expected) const {
    throw Error(fmt::format("config: {}: \"{}\" is {} ({}), expected {}", source, key, v.type_name(), v.dump(),
                            expected));
  }
  int64_t integer(const json& v, const std::string& key) const {
    if (!v.is_number_integer()) wrong(key, v, "an integer");
    return v.get<int64_t>();
  }
  int64_t req_int(const std::string& key, const json* obj = nullptr) const {
    const json* v = find(obj ? *obj : j, key);
    MLR_CHECK(v, "config: {}: required key \"{}\" is missing", source, key);
    return integer(*v, key);
  }
  std::optional<int64_t> opt_int(const std::string& key) const {
    const json* v = find(j, key);
    return v ? std::optional<int64_t>(integer(*v, key)) : std::nullopt;
  }
  double number(const json& v, const std::string& key) const {
    if (!v.is_number()) wrong(key, v, "a number");
    return v.get<double>();
  }
  double opt_double(const std::string& key, double fallback, const json* obj = nullptr) const {
    const json* v = find(obj ? *obj : j, key);
    return v ? number(*v, key) : fallback;
  }
  double req_double(const std::string& key, const json& obj) const {
    const json* v = find(obj, key);
    MLR_CHECK(v, "config: {}: required key \"{}\" is missing", source, key);
    return number(*v, key);
  }
  bool opt_bool(const std::string& key, bool fallback) const {
    const json* v = find(j, key);
    if (!v) return fallback;
    if (!v->is_boolean()) wrong(key, *v, "true or false");
    return v->get<bool>();
  }
  std::optional<std::string> opt_string(const std::string& key) const {
    const json* v = find(j, key);
    if (!v) return std::nullopt;
    if (!v->is_string()) wrong(key, *v, "a string");
    return v->get<std::string>();
  }
};

// rope_scaling (older configs, with rope_theta at the top level) or rope_parameters (transformers
// >= 5, holding rope_theta too). `key` is the one found.
void read_rope(const Reader& r, const json& rope, const std::string& key, LlamaConfig& c) {
  if (!rope.is_object()) r.wrong(key, rope, "an object or null");
  if (const json* theta = r.find(rope, "rope_theta")) c.rope_theta = r.number(*theta, key + ".rope_theta");
  std::string type;
  for (const char* k : {"rope_type", "type"}) {
    if (const json* t = r.find(rope, k)) {
      if (!t->is_string()) r.wrong(key + "." + k, *t, "a string");
      type = t->get<std::string>();
      break;
    }
  }
  if (type.empty() || type == "default") return;
  if (const json* p = r.find(rope, "partial_rotary_factor")) {
    MLR_CHECK(r.number(*p, key + ".partial_rotary_factor") == 1.0,
              "config: {}: {}.partial_rotary_factor {} is not supported (only full rotary embeddings)", r.source, key,
              p->dump());
  }
  RopeScaling& s = c.rope_scaling;
  if (type == "linear") {
    s.type = RopeScaling::Type::linear;
  } else if (type == "llama3") {
    s.type = RopeScaling::Type::llama3;
    s.low_freq_factor = r.req_double("low_freq_factor", rope);
    s.high_freq_factor = r.req_double("high_freq_factor", rope);
    s.original_max_position_embeddings = r.req_int("original_max_position_embeddings", &rope);
    MLR_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0,
              "config: {}: {} of type llama3 needs 0 < low_freq_factor < high_freq_factor, got {} and {}", r.source,
              key, s.low_freq_factor, s.high_freq_factor);
    MLR_CHECK(s.original_max_position_embeddings > 0,
              "config: {}: {}.original_max_position_embeddings must be positive, got {}", r.source, key,
              s.original_max_position_embeddings);
  } else {
    throw Error(fmt::format("config: {}: {} of type \"{}\" is not supported (supported: default, linear, llama3)",
                            r.source, key, type));
  }
  s.factor = r.req_double("factor", rope);
  MLR_CHECK(s.factor > 0, "config: {}: {}.factor must be positive, got {}", r.source, key, s.factor);
}

}  // namespace

LlamaConfig LlamaConfig::from_json(const json& j, const std::string& source) {
  MLR_CHECK(j.is_object(), "config: {}: expected a JSON object, got {}", source, j.type_name());
  Reader r{j, source};
  LlamaConfig c;
  if (auto mt = r.opt_string("model_type")) c.model_type = *mt;
  c.hidden_size = r.req_int("hidden_size");
  c.num_hidden_layers = r.req_int("num_hidden_layers");
  c.num_attention_heads = r.req_int("num_attention_heads");
  c.intermediate_size = r.req_int("intermediate_size");
  c.vocab_size = r.req_int("vocab_size");
  for (auto [key, v] : {std::pair{"hidden_size", c.hidden_size}, {"num_hidden_layers", c.num_hidden_layers},
                        {"num_attention_heads", c.num_attention_heads}, {"intermediate_size", c.intermediate_size},
                        {"vocab_size", c.vocab_size}})
    MLR_CHECK(v > 0, "config: {}: \"{}\" must be positive, got {}", source, key, v);
  c.num_key_value_heads = r.opt_int("num_key_value_heads").value_or(c.num_attention_heads);
  MLR_CHECK(c.num_key_value_heads > 0 && c.num_attention_heads % c.num_key_value_heads == 0,
            "config: {}: num_attention_heads {} is not a multiple of num_key_value_heads {}", source,
            c.num_attention_heads, c.num_key_value_heads);
  if (auto hd = r.opt_int("head_dim")) {
    c.head_dim = *hd;
  } else {
    MLR_CHECK(c.hidden_size % c.num_attention_heads == 0,
              "config: {}: hidden_size {} is not divisible by num_attention_heads {} and head_dim is not given",
              source, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  MLR_CHECK(c.head_dim > 0 && c.head_dim % 2 == 0, "config: {}: head_dim {} must be positive and even (RoPE "
            "rotates pairs)", source, c.head_dim);
  c.rms_norm_eps = r.opt_double("rms_norm_eps", 1e-6);
  c.rope_theta = r.opt_double("rope_theta", 10000.0);
  for (const char* key : {"rope_scaling", "rope_parameters"})
    if (const json* rope = r.find(j, key)) read_rope(r, *rope, key, c);
  MLR_CHECK(c.rope_theta > 0, "config: {}: rope_theta must be positive, got {}", source, c.rope_theta);
  if (auto m = r.opt_int("max_position_embeddings")) c.max_position_embeddings = *m;
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings", false);
  const bool qwen2 = c.model_type == "qwen2";
  const bool attention_bias = r.opt_bool("attention_bias", qwen2);
  c.qkv_bias = attention_bias;
  c.o_proj_bias = qwen2 ? false : attention_bias;
  c.mlp_bias = r.opt_bool("mlp_bias", false);
  // Sliding-window attention (Mistral; Qwen2 with use_sliding_window) is not implemented: refuse it
  // rather than silently attending to the whole context.
  MLR_CHECK(!r.opt_bool("use_sliding_window", false),
            "config: {}: \"use_sliding_window\" is true, but sliding-window attention is not supported", source);
  if (!qwen2) {
    if (const json* window = r.find(j, "sliding_window"); window && !window->is_null()) {
      const int64_t w = r.integer(*window, "sliding_window");
      MLR_CHECK(w >= c.max_position_embeddings,
                "config: {}: \"sliding_window\" {} is shorter than max_position_embeddings {}, but sliding-window "
                "attention is not supported",
                source, w, c.max_position_embeddings);
    }
  }
  c.bos_token_id = r.opt_int("bos_token_id");
  c.pad_token_id = r.opt_int("pad_token_id");
  if (const json* eos = r.find(j, "eos_token_id")) {
    if (eos->is_array()) {
      for (const auto& e : *eos) c.eos_token_ids.push_back(r.integer(e, "eos_token_id"));
    } else {
      c.eos_token_ids.push_back(r.integer(*eos, "eos_token_id"));
    }
  }
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto d = r.opt_string(key)) {
      try {
        c.dtype = parse_dtype(*d);
      } catch (const Error& e) {
        throw Error(fmt::format("config: {}: \"{}\": {}", source, key, std::string(e.what()).substr(5)));
      }
      break;
    }
  }
  return c;
}

LlamaConfig LlamaConfig::load(const std::string& path) {
  fs::path p(path);
  if (fs::is_directory(p)) p /= "config.json";
  std::ifstream in(p, std::ios::binary);
  MLR_CHECK(in, "config: cannot open {}", p.string());
  std::stringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("config: {}: invalid JSON at byte {}: {}", p.string(), e.byte, e.what()));
  // A number too large for a double ("1e999") is not a parse_error but out_of_range.
  } catch (const json::exception& e) {
    throw Error(fmt::format("config: {}: invalid JSON: {}", p.string(), e.what()));
  }
  return from_json(j, p.string());
}

std::vector<float> rope_inv_freq(const LlamaConfig& c) {
  // f32 throughout, step for step as transformers computes it, so the values agree to the ulp.
  const int64_t dim = c.head_dim;
  const float base = static_cast<float>(c.rope_theta);
  std::vector<float> inv(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim / 2; ++i) {
    float e = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[i] = 1.0f / std::pow(base, e);
  }
  const RopeScaling& s = c.rope_scaling;
  const float factor = static_cast<float>(s.factor);
  if (s.type == RopeScaling::Type::linear) {
    for (float& f : inv) f /= factor;
  } else if (s.type == RopeScaling::Type::llama3) {
    const double old_len = static_cast<double>(s.original_max_position_embeddings);
    const float low_wavelen = static_cast<float>(old_len / s.low_freq_factor);
    const float high_wavelen = static_cast<float>(old_len / s.high_freq_factor);
    const float lo = static_cast<float>(s.low_freq_factor), hi = static_cast<float>(s.high_freq_factor);
    for (float& f : inv) {
      const float wavelen = static_cast<float>(2 * M_PI) / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = f / factor;
        continue;
      }
      const float smooth = (static_cast<float>(old_len) / wavelen - lo) / (hi - lo);
      f = (1 - smooth) * f / factor + smooth * f;
    }
  }
  return inv;
}

}  // namespace mlr

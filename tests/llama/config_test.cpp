// LlamaConfig from the config.json of LLaMA-2-7B, LLaMA-3.1-8B-Instruct (llama3 rope scaling),
// TinyLlama-1.1B, SmolLM-135M and Qwen2-0.5B (tests/fixtures/llama/configs/, copied by hand from
// their public values), and RoPE inverse frequencies against transformers' rope init functions
// (tests/fixtures/llama/rope_reference.json, by scripts/fixtures/make_safetensors_fixtures.py).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llama/config.h"
#include "tensor/error.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace mlr;

namespace {

const fs::path kConfigs = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "llama" / "configs";

json read_json(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void check_error(const json& j, const std::string& part) {
  std::string msg = error_of([&] { LlamaConfig::from_json(j, "some/config.json"); });
  CAPTURE(msg);
  CHECK(msg.find("config: some/config.json: ") != std::string::npos);
  CHECK(msg.find(part) != std::string::npos);
}

}  // namespace

TEST_CASE("config: public LLaMA-family configs") {
  SUBCASE("LLaMA-2-7B") {
    auto c = LlamaConfig::load((kConfigs / "llama2_7b.json").string());
    CHECK(c.model_type == "llama");
    CHECK(c.hidden_size == 4096);
    CHECK(c.num_hidden_layers == 32);
    CHECK(c.num_attention_heads == 32);
    CHECK(c.num_key_value_heads == 32);
    CHECK(c.kv_groups() == 1);
    CHECK(c.head_dim == 128);
    CHECK(c.intermediate_size == 11008);
    CHECK(c.vocab_size == 32000);
    CHECK(c.rms_norm_eps == 1e-5);
    CHECK(c.rope_theta == 10000.0);  // absent from the file: the default
    CHECK(c.rope_scaling.type == RopeScaling::Type::none);
    CHECK(c.max_position_embeddings == 4096);
    CHECK(!c.tie_word_embeddings);
    CHECK(!c.qkv_bias);
    CHECK(!c.o_proj_bias);
    CHECK(!c.mlp_bias);
    CHECK(c.bos_token_id == 1);
    CHECK(c.eos_token_ids == std::vector<int64_t>{2});
    CHECK(c.pad_token_id == 0);
    CHECK(c.dtype == DType::f16);
  }
  SUBCASE("LLaMA-3.1-8B-Instruct: grouped-query attention, llama3 rope scaling, several eos ids") {
    auto c = LlamaConfig::load((kConfigs / "llama3_8b_instruct.json").string());
    CHECK(c.num_key_value_heads == 8);
    CHECK(c.kv_groups() == 4);
    CHECK(c.head_dim == 128);
    CHECK(c.intermediate_size == 14336);
    CHECK(c.vocab_size == 128256);
    CHECK(c.rope_theta == 500000.0);
    CHECK(c.rope_scaling.type == RopeScaling::Type::llama3);
    CHECK(c.rope_scaling.factor == 8.0);
    CHECK(c.rope_scaling.low_freq_factor == 1.0);
    CHECK(c.rope_scaling.high_freq_factor == 4.0);
    CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
    CHECK(c.max_position_embeddings == 131072);
    CHECK(c.bos_token_id == 128000);
    CHECK(c.eos_token_ids == std::vector<int64_t>{128001, 128008, 128009});
    CHECK(!c.pad_token_id);
    CHECK(c.dtype == DType::bf16);
  }
  SUBCASE("TinyLlama-1.1B") {
    auto c = LlamaConfig::load((kConfigs / "tinyllama_1.1b.json").string());
    CHECK(c.hidden_size == 2048);
    CHECK(c.num_hidden_layers == 22);
    CHECK(c.num_key_value_heads == 4);
    CHECK(c.head_dim == 64);
    CHECK(c.intermediate_size == 5632);
    CHECK(c.max_position_embeddings == 2048);
  }
  SUBCASE("SmolLM-135M: tied embeddings, 9 heads of 64") {
    auto c = LlamaConfig::load((kConfigs / "smollm_135m.json").string());
    CHECK(c.hidden_size == 576);
    CHECK(c.num_attention_heads == 9);
    CHECK(c.num_key_value_heads == 3);
    CHECK(c.head_dim == 64);
    CHECK(c.tie_word_embeddings);
    CHECK(c.bos_token_id == 0);
    CHECK(c.eos_token_ids == std::vector<int64_t>{0});
    CHECK(c.dtype == DType::f32);
  }
  SUBCASE("Qwen2-0.5B: q/k/v biases without a key saying so, none on o_proj") {
    auto c = LlamaConfig::load((kConfigs / "qwen2_0.5b.json").string());
    CHECK(c.model_type == "qwen2");
    CHECK(c.hidden_size == 896);
    CHECK(c.num_attention_heads == 14);
    CHECK(c.num_key_value_heads == 2);
    CHECK(c.head_dim == 64);
    CHECK(c.intermediate_size == 4864);
    CHECK(c.vocab_size == 151936);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.rope_theta == 1000000.0);
    CHECK(c.tie_word_embeddings);
    CHECK(c.qkv_bias);
    CHECK(!c.o_proj_bias);
  }
  SUBCASE("linear rope scaling, defaults for omitted keys") {
    auto c = LlamaConfig::load((kConfigs / "llama2_linear_rope.json").string());
    CHECK(c.rope_scaling.type == RopeScaling::Type::linear);
    CHECK(c.rope_scaling.factor == 2.0);
    CHECK(c.num_key_value_heads == 32);
    CHECK(!c.bos_token_id);
    CHECK(c.eos_token_ids.empty());
    CHECK(!c.dtype);
  }
}

TEST_CASE("config: attention_bias on a llama config puts biases on q, k, v and o") {
  json j = read_json(kConfigs / "tinyllama_1.1b.json");
  j["attention_bias"] = true;
  j["mlp_bias"] = true;
  auto c = LlamaConfig::from_json(j);
  CHECK(c.qkv_bias);
  CHECK(c.o_proj_bias);
  CHECK(c.mlp_bias);
}

TEST_CASE("config: rope inverse frequencies match transformers") {
  const json ref = read_json(kConfigs.parent_path() / "rope_reference.json");
  REQUIRE(ref.size() == 6);
  for (const auto& [file, r] : ref.items()) {
    CAPTURE(file);
    auto c = LlamaConfig::load((kConfigs / file).string());
    auto got = rope_inv_freq(c);
    auto want = r["inv_freq"].get<std::vector<double>>();
    REQUIRE(got.size() == want.size());
    // f32 arithmetic in the same order as torch; pow may differ from torch's by an ulp.
    int worst_ulps = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const float w = static_cast<float>(want[i]);  // torch's f32 value, exact in the JSON
      int ulps = 0;
      for (float x = std::min(got[i], w); x < std::max(got[i], w) && ulps <= 8; ++ulps) x = std::nextafter(x, 1e30f);
      worst_ulps = std::max(worst_ulps, ulps);
    }
    MESSAGE(file << ": worst difference from transformers " << worst_ulps << " ulp");
    CHECK(worst_ulps <= 1);
  }
  // Where the llama3 branches fall: the fastest frequencies are kept, the slowest divided by 8.
  auto c = LlamaConfig::load((kConfigs / "llama3_8b_instruct.json").string());
  auto scaled = rope_inv_freq(c);
  c.rope_scaling = {};
  auto plain = rope_inv_freq(c);
  CHECK(scaled.front() == plain.front());
  CHECK(scaled.back() == doctest::Approx(plain.back() / 8).epsilon(1e-6));
}

TEST_CASE("config: transformers 5 rope_parameters give the same frequencies as rope_scaling") {
  json old = read_json(kConfigs / "llama3_8b_instruct.json");
  json j = old;
  j.erase("rope_scaling");
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_type", "llama3"},      {"rope_theta", 500000.0},
                          {"factor", 8.0},              {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0},    {"original_max_position_embeddings", 8192}};
  auto a = LlamaConfig::from_json(old), b = LlamaConfig::from_json(j);
  CHECK(b.rope_theta == 500000.0);
  CHECK(rope_inv_freq(a) == rope_inv_freq(b));
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000.0}};
  CHECK(LlamaConfig::from_json(j).rope_scaling.type == RopeScaling::Type::none);
  CHECK(LlamaConfig::from_json(j).rope_theta == 1000.0);
}

TEST_CASE("config: missing keys and wrong types name the file and the key") {
  const json base = read_json(kConfigs / "llama2_7b.json");
  for (const char* key : {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"}) {
    json j = base;
    j.erase(key);
    check_error(j, fmt::format("required key \"{}\" is missing", key));
  }
  json j = base;
  j["hidden_size"] = "4096";
  check_error(j, "\"hidden_size\" is string (\"4096\"), expected an integer");
  j = base;
  j["rms_norm_eps"] = "1e-5";
  check_error(j, "\"rms_norm_eps\" is string");
  j = base;
  j["tie_word_embeddings"] = 1;
  check_error(j, "\"tie_word_embeddings\" is number (1), expected true or false");
  j = base;
  j["eos_token_id"] = {2, "x"};
  check_error(j, "\"eos_token_id\" is string (\"x\"), expected an integer");
  j = base;
  j["num_key_value_heads"] = 5;
  check_error(j, "num_attention_heads 32 is not a multiple of num_key_value_heads 5");
  j = base;
  j["hidden_size"] = 4095;
  check_error(j, "hidden_size 4095 is not divisible by num_attention_heads 32");
  j = base;
  j["vocab_size"] = 0;
  check_error(j, "\"vocab_size\" must be positive");
  j = base;
  j["torch_dtype"] = "float8";
  check_error(j, "\"torch_dtype\": unknown dtype 'float8'");
  j = base;
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  check_error(j, "rope_scaling of type \"yarn\" is not supported (supported: default, linear, llama3)");
  j = base;
  j["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  check_error(j, "rope_scaling of type \"dynamic\" is not supported");
  j = base;
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  check_error(j, "required key \"low_freq_factor\" is missing");
  j = base;
  j["rope_scaling"] = {{"type", "linear"}};
  check_error(j, "required key \"factor\" is missing");
  j = base;
  j["rope_scaling"] = "linear";
  check_error(j, "\"rope_scaling\" is string");
  check_error(json::array(), "expected a JSON object");

  const fs::path dir = fs::temp_directory_path() / ("mlr_config_test_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << "{\"hidden_size\": 12,";
  std::string msg = error_of([&] { LlamaConfig::load(dir.string()); });  // a directory: its config.json
  CHECK(msg.find((dir / "config.json").string() + ": invalid JSON at byte") != std::string::npos);
  std::ofstream(dir / "config.json") << base.dump();
  CHECK(LlamaConfig::load(dir.string()).hidden_size == 4096);
  fs::remove_all(dir);
  CHECK(error_of([&] { LlamaConfig::load(dir.string()); }).find("cannot open") != std::string::npos);
}

TEST_CASE("config: sliding-window attention is refused, not silently ignored") {
  json qwen = read_json(kConfigs / "qwen2_0.5b.json");
  CHECK_NOTHROW(LlamaConfig::from_json(qwen));  // use_sliding_window false: full attention, as the model was trained
  qwen["use_sliding_window"] = true;
  check_error(qwen, "\"use_sliding_window\" is true, but sliding-window attention is not supported");
  json mistral = read_json(kConfigs / "tinyllama_1.1b.json");
  mistral["max_position_embeddings"] = 32768;
  mistral["sliding_window"] = 4096;
  check_error(mistral, "\"sliding_window\" 4096 is shorter than max_position_embeddings 32768");
  mistral["sliding_window"] = nullptr;  // newer Mistral configs: no window
  CHECK_NOTHROW(LlamaConfig::from_json(mistral));
  mistral["sliding_window"] = 32768;
  CHECK_NOTHROW(LlamaConfig::from_json(mistral));
}

// Adapter files: PEFT layout, round trips of all three kinds, and one error listing every mismatch.
#include <doctest/doctest.h>

#include "tests/test_support.h"
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include <nlohmann/json.hpp>

#include "llama/safetensors.h"
#include "multilora/adapter_file.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
#include "tests/multilora/test_helpers.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace mlr;
using mlr::test::error_of;
using mlr::test::random_tensor;

namespace {


json read_json(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

void write_text(const fs::path& p, const std::string& s) { std::ofstream(p, std::ios::binary) << s; }

// Two layers' q_proj and v_proj, like a tiny LLaMA.
const std::vector<std::string> kPaths = {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                         "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"};

template <typename A, typename C>
std::vector<std::unique_ptr<A>> make_adapters(const C& config, uint64_t seed, int64_t out = 6, int64_t in = 5) {
  Generator gen(seed);
  std::vector<std::unique_ptr<A>> v;
  for (size_t i = 0; i < kPaths.size(); ++i)
    v.push_back(std::make_unique<A>(random_tensor({out, in}, 100 + i, DType::f32), Tensor(), config, gen));
  return v;
}

template <typename A>
std::vector<NamedAdapter> named(const std::vector<std::unique_ptr<A>>& adapters) {
  std::vector<NamedAdapter> v;
  for (size_t i = 0; i < adapters.size(); ++i) v.push_back({kPaths[i], adapters[i].get()});
  return v;
}

// Makes every tensor of the adapters nonzero and distinct (B starts at zero in LoRA).
template <typename A>
void randomise(const std::vector<std::unique_ptr<A>>& adapters, uint64_t seed) {
  for (auto& a : adapters)
    for (auto& [name, v] : a->named_tensors()) {
      Tensor d = v.data();
      d.copy_(random_tensor(d.shape(), seed++, DType::f32));
    }
}

template <typename A>
void check_same(const std::vector<std::unique_ptr<A>>& x, const std::vector<std::unique_ptr<A>>& y) {
  for (size_t i = 0; i < x.size(); ++i) {
    auto tx = x[i]->named_tensors(), ty = y[i]->named_tensors();
    REQUIRE(tx.size() == ty.size());
    for (size_t j = 0; j < tx.size(); ++j) {
      INFO(kPaths[i] << "." << tx[j].first);
      CHECK(max_abs_diff(tx[j].second.data(), ty[j].second.data()) == 0.0);
    }
    x[i]->train(false);
    y[i]->train(false);
    Tensor in = random_tensor({3, 5}, 9, DType::f32);
    CHECK(max_abs_diff(x[i]->forward(in).data(), y[i]->forward(in).data()) == 0.0);
  }
}

}  // namespace

TEST_CASE("adapter file: LoRA in PEFT's layout, round trip") {
  TempDir dir;
  LoraConfig c;
  c.r = 3;
  c.alpha = 6;
  c.dropout = 0.05;
  auto a = make_adapters<LoraLinear>(c, 1);
  randomise(a, 10);
  save_adapter(dir.path.string(), named(a), {"meta-llama/Llama-2-7b-hf"});

  json cfg = read_json(dir.path / "adapter_config.json");
  CHECK(cfg["peft_type"] == "LORA");
  CHECK(cfg["r"] == 3);
  CHECK(cfg["lora_alpha"].is_number_integer());
  CHECK(cfg["lora_alpha"] == 6);
  CHECK(cfg["lora_dropout"] == 0.05);
  CHECK(cfg["target_modules"] == json({"q_proj", "v_proj"}));
  CHECK(cfg["bias"] == "none");
  CHECK(cfg["use_rslora"] == false);
  CHECK(cfg["task_type"] == "CAUSAL_LM");
  CHECK(cfg["base_model_name_or_path"] == "meta-llama/Llama-2-7b-hf");
  SafetensorsFile st = SafetensorsFile::open((dir.path / "adapter_model.safetensors").string());
  CHECK(st.names().size() == 8);
  CHECK(st.contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
  CHECK(st.contains("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight"));
  CHECK(st.info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape == Shape{3, 5});
  CHECK(st.info("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight").shape == Shape{6, 3});
  CHECK(st.metadata().at("format") == "pt");

  AdapterFile file = read_adapter_file(dir.path.string());
  CHECK(adapter_module_paths(file) == kPaths);
  LoraConfig back = lora_config_from_json(file.config);
  CHECK(back.r == 3);
  CHECK(back.alpha == 6.0);
  CHECK(back.dropout == 0.05);
  auto b = make_adapters<LoraLinear>(back, 2);
  load_adapter(dir.path.string(), named(b));
  check_same(a, b);
}

TEST_CASE("adapter file: MultiLoRA and SMoRA round trips with their extra tensors and fields") {
  {
    TempDir dir;
    MultiLoraConfig c;
    c.ranks = {2, 1, 1};
    c.alpha = 8;
    c.scale_mode = MultiLoraScale::per_channel;
    auto a = make_adapters<MultiLoraLinear>(c, 3);
    randomise(a, 20);
    save_adapter(dir.path.string(), named(a));
    json cfg = read_json(dir.path / "adapter_config.json");
    CHECK(cfg["peft_type"] == "MULTILORA");
    CHECK(cfg["r"] == 4);
    CHECK(cfg["n_modules"] == 3);
    CHECK(cfg["ranks"] == json({2, 1, 1}));
    CHECK(cfg["scale_mode"] == "per_channel");
    SafetensorsFile st = SafetensorsFile::open((dir.path / "adapter_model.safetensors").string());
    CHECK(st.info("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight").shape == Shape{4, 5});
    CHECK(st.info("base_model.model.model.layers.0.self_attn.q_proj.multilora_scale").shape == Shape{3, 6});
    MultiLoraConfig back = multilora_config_from_json(read_adapter_file(dir.path.string()).config);
    CHECK(back.ranks == std::vector<int64_t>{2, 1, 1});
    CHECK(back.scale_mode == MultiLoraScale::per_channel);
    auto b = make_adapters<MultiLoraLinear>(back, 4);
    load_adapter(dir.path.string(), named(b));
    check_same(a, b);
  }
  {
    TempDir dir;
    SmoraConfig c;
    c.r = 4;
    c.top_k = 2;
    c.alpha = 2;
    c.score = SmoraScore::softmax;
    auto a = make_adapters<SmoraLinear>(c, 5);
    randomise(a, 30);
    save_adapter(dir.path.string(), named(a));
    json cfg = read_json(dir.path / "adapter_config.json");
    CHECK(cfg["peft_type"] == "SMORA");
    CHECK(cfg["top_k"] == 2);
    CHECK(cfg["score_function"] == "softmax");
    CHECK(cfg["gate_scale"] == 2);
    SafetensorsFile st = SafetensorsFile::open((dir.path / "adapter_model.safetensors").string());
    CHECK(st.info("base_model.model.model.layers.1.self_attn.v_proj.smora_router.weight").shape == Shape{4, 5});
    CHECK(st.info("base_model.model.model.layers.1.self_attn.v_proj.smora_bias").shape == Shape{4});
    SmoraConfig back = smora_config_from_json(read_adapter_file(dir.path.string()).config);
    CHECK(back.top_k == 2);
    CHECK(back.score == SmoraScore::softmax);
    auto b = make_adapters<SmoraLinear>(back, 6);
    load_adapter(dir.path.string(), named(b));
    check_same(a, b);  // includes the selection bias
  }
}

TEST_CASE("adapter file: a mismatching model gets one error listing every problem") {
  TempDir dir;
  LoraConfig c;
  c.r = 3;
  c.alpha = 6;
  auto a = make_adapters<LoraLinear>(c, 1);
  save_adapter(dir.path.string(), named(a));

  // Another rank: config field and every tensor shape are listed.
  LoraConfig other = c;
  other.r = 4;
  auto b = make_adapters<LoraLinear>(other, 2);
  std::string e = error_of([&] { load_adapter(dir.path.string(), named(b)); });
  CHECK(e.find("does not match the model (9 problems)") != std::string::npos);
  CHECK(e.find("config field \"r\" is 3 in the file, 4 in the model") != std::string::npos);
  CHECK(e.find("tensor 'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight' has shape [3, 5] in the "
               "file, [4, 5] in the model") != std::string::npos);

  // Other module names and another width: missing and unexpected tensors, mis-shaped ones.
  Generator gen(3);
  LoraLinear k_proj(random_tensor({6, 5}, 1, DType::f32), Tensor(), c, gen);
  LoraLinear wide(random_tensor({6, 7}, 1, DType::f32), Tensor(), c, gen);
  std::vector<NamedAdapter> model = {{"model.layers.0.self_attn.k_proj", &k_proj},
                                     {"model.layers.0.self_attn.q_proj", &wide}};
  e = error_of([&] { load_adapter(dir.path.string(), model); });
  CHECK(e.find("missing tensor 'base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight' (expected shape [3, "
               "5])") != std::string::npos);
  CHECK(e.find("unexpected tensor 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight' [6, 3]") !=
        std::string::npos);
  CHECK(e.find("q_proj.lora_A.weight' has shape [3, 5] in the file, [3, 7] in the model") != std::string::npos);
  // Nothing was loaded: the values the model had are unchanged.
  CHECK(amax(abs(wide.lora_B().data())).item<double>() == 0.0);

  // Another kind.
  MultiLoraConfig mc;
  mc.r = 3;
  mc.n_modules = 3;
  mc.alpha = 6;
  auto m = make_adapters<MultiLoraLinear>(mc, 4);
  e = error_of([&] { load_adapter(dir.path.string(), named(m)); });
  CHECK(e.find("config field \"peft_type\" is \"LORA\" in the file, \"MULTILORA\" in the model") != std::string::npos);
  CHECK(e.find("missing tensor 'base_model.model.model.layers.0.self_attn.q_proj.multilora_scale'") !=
        std::string::npos);
}

TEST_CASE("adapter file: malformed configs and mixed adapters are errors naming the field") {
  TempDir dir;
  LoraConfig c;
  c.r = 2;
  auto a = make_adapters<LoraLinear>(c, 1);
  save_adapter(dir.path.string(), named(a));
  fs::path cfg = dir.path / "adapter_config.json";
  json good = read_json(cfg);

  write_text(cfg, "{\"peft_type\": \"LORA\", \"r\": ");
  CHECK(error_of([&] { read_adapter_file(dir.path.string()); }).find("invalid JSON at byte") != std::string::npos);
  json j = good;
  j["peft_type"] = "IA3";
  write_text(cfg, j.dump());
  CHECK(error_of([&] { read_adapter_file(dir.path.string()); })
            .find("peft_type \"IA3\" is not one of LORA, MULTILORA, SMORA") != std::string::npos);
  j = good;
  j["rank_pattern"] = {{"q_proj", 8}};
  write_text(cfg, j.dump());
  CHECK(error_of([&] { read_adapter_file(dir.path.string()); }).find("rank_pattern = {\"q_proj\":8} is not supported") !=
        std::string::npos);
  j = good;
  j["r"] = "two";
  CHECK(error_of([&] { lora_config_from_json(j); }).find("field \"r\" is \"two\", expected a positive integer") !=
        std::string::npos);
  j = good;
  j.erase("lora_alpha");
  CHECK(error_of([&] { lora_config_from_json(j); }).find("missing field \"lora_alpha\"") != std::string::npos);
  fs::remove(cfg);
  CHECK(error_of([&] { read_adapter_file(dir.path.string()); }).find("adapter_config.json not found") !=
        std::string::npos);

  // One config must describe every module.
  LoraConfig c4 = c;
  c4.r = 4;
  Generator gen(1);
  LoraLinear r2(random_tensor({6, 5}, 1, DType::f32), Tensor(), c, gen);
  LoraLinear r4(random_tensor({6, 5}, 1, DType::f32), Tensor(), c4, gen);
  CHECK(error_of([&] { save_adapter(dir.path.string(), {{"a.q_proj", &r2}, {"a.k_proj", &r4}}); })
            .find("'a.k_proj' has r = 4 but 'a.q_proj' has 2") != std::string::npos);
  CHECK(error_of([&] { save_adapter(dir.path.string(), {{"a.q_proj", &r2}, {"a.q_proj", &r2}}); })
            .find("'a.q_proj' appears twice") != std::string::npos);
}

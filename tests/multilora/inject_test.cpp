// Injection into an nn::Module tree named like a LLaMA model: targets and layer ranges, frozen
// base, state-dict names, file round trip through the model, merge for export, errors.
#include <doctest/doctest.h>

#include "tests/test_support.h"
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <set>

#include "multilora/dora.h"
#include "multilora/inject.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
#include "tests/multilora/test_helpers.h"

namespace fs = std::filesystem;
using namespace mlr;
using mlr::test::error_of;
using mlr::test::random_tensor;

namespace {

constexpr int64_t kHidden = 8, kInter = 12, kLayers = 3;

struct Attention : Module {
  explicit Attention(Generator& g) : Module("Attention") {
    q_proj = register_module<UnaryModule>("q_proj", std::make_shared<Linear>(kHidden, kHidden, false, &g));
    v_proj = register_module<UnaryModule>("v_proj", std::make_shared<Linear>(kHidden, kHidden, true, &g));
  }
  ChildRef<UnaryModule> q_proj, v_proj;
};
struct Mlp : Module {
  explicit Mlp(Generator& g) : Module("Mlp") {
    up_proj = register_module<UnaryModule>("up_proj", std::make_shared<Linear>(kHidden, kInter, false, &g));
    down_proj = register_module<UnaryModule>("down_proj", std::make_shared<Linear>(kInter, kHidden, false, &g));
  }
  ChildRef<UnaryModule> up_proj, down_proj;
};
struct Layer : Module {
  explicit Layer(Generator& g) : Module("Layer") {
    self_attn = register_module("self_attn", std::make_shared<Attention>(g));
    mlp = register_module("mlp", std::make_shared<Mlp>(g));
  }
  ChildRef<Attention> self_attn;
  ChildRef<Mlp> mlp;
};
struct Body : Module {
  explicit Body(Generator& g) : Module("Body") {
    auto list = std::make_shared<ModuleList>();
    for (int64_t i = 0; i < kLayers; ++i) refs.push_back(list->push_back(std::make_shared<Layer>(g)));
    layers = register_module("layers", list);
  }
  ChildRef<ModuleList> layers;
  std::vector<ChildRef<Layer>> refs;
};
// model.layers.N.self_attn.{q,v}_proj, model.layers.N.mlp.{up,down}_proj, lm_head
struct TinyModel : Module {
  explicit TinyModel(uint64_t seed) : Module("TinyModel") {
    Generator g(seed);
    model = register_module("model", std::make_shared<Body>(g));
    lm_head = register_module<UnaryModule>("lm_head", std::make_shared<Linear>(kHidden, 5, false, &g));
  }
  Variable forward(const Variable& x) {
    Variable h = x;
    for (auto& layer : model->refs) {
      h = add(h, layer->self_attn->v_proj->forward(tanh(layer->self_attn->q_proj->forward(h))));
      h = add(h, layer->mlp->down_proj->forward(silu(layer->mlp->up_proj->forward(h))));
    }
    return lm_head->forward(h);
  }
  ChildRef<Body> model;
  ChildRef<UnaryModule> lm_head;
};


void randomise_adapters(const Module& m, uint64_t seed) {
  for (auto& na : find_adapters(m))
    for (auto& [name, v] : na.adapter->named_tensors()) {
      if (name == "smora_bias") continue;
      Tensor d = v.data();
      d.copy_(random_tensor(d.shape(), seed++, d.dtype(), 0.2));
    }
}

}  // namespace

TEST_CASE("inject: layer index of a module path") {
  CHECK(layer_index_of("model.layers.3.mlp.up_proj") == 3);
  CHECK(layer_index_of("layers.12.q_proj") == 12);
  CHECK(layer_index_of("model.layers.x.q_proj") == -1);
  CHECK(layer_index_of("lm_head") == -1);
  CHECK(layer_index_of("model.sublayers.1.q") == -1);
}

TEST_CASE("inject: LoRA on targets and layers; base frozen; HF names kept; output unchanged at init") {
  TinyModel m(1);
  Tensor x = random_tensor({2, 3, kHidden}, 2, DType::f32);
  Tensor before = m.forward(x).data();
  auto base_names = m.state_dict();

  LoraConfig lora;
  lora.r = 2;
  lora.alpha = 4;
  InjectionSpec spec;
  spec.adapter = std::make_shared<LoraConfig>(lora);
  spec.target_modules = {"q_proj", "v_proj", "down_proj"};
  spec.layers_to_transform = {0, 2};
  auto adapters = inject_adapters(m, spec);
  std::vector<std::string> paths;
  for (auto& na : adapters) paths.push_back(na.module_path);
  CHECK(paths == std::vector<std::string>{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
                                          "model.layers.0.mlp.down_proj", "model.layers.2.self_attn.q_proj",
                                          "model.layers.2.self_attn.v_proj", "model.layers.2.mlp.down_proj"});
  CHECK(find_adapters(m).size() == 6);
  // Only the adapters train: 6 modules x (A, B).
  auto trainable = m.named_parameters(true);
  CHECK(trainable.size() == 12);
  for (auto& [name, v] : trainable) CHECK((name.find(".lora_A.weight") != std::string::npos ||
                                           name.find(".lora_B.weight") != std::string::npos));
  auto sd = m.state_dict();
  for (auto& [name, t] : base_names) CHECK_MESSAGE(sd.count(name), name);  // base names unchanged
  CHECK(sd.count("model.layers.0.self_attn.v_proj.bias"));
  CHECK(sd.count("model.layers.2.mlp.down_proj.lora_B.weight"));
  CHECK(!sd.count("model.layers.1.self_attn.q_proj.lora_A.weight"));
  CHECK(sd.size() == base_names.size() + 12);

  CHECK(max_abs_diff(m.forward(x).data(), before) == 0.0);  // B = 0
  randomise_adapters(m, 10);
  Variable y = m.forward(x);
  CHECK(max_abs_diff(y.data(), before) > 1e-3);
  y.backward(ones_like(y.data()));
  for (auto& [name, v] : m.named_parameters()) {
    INFO(name);
    CHECK(v.grad().defined() == v.requires_grad());
  }
  CHECK(error_of([&] { inject_adapters(m, spec); }).find("'model.layers.0.self_attn.q_proj' already has an adapter") !=
        std::string::npos);
  // A second injection elsewhere keeps the first adapters trainable.
  InjectionSpec more;
  more.target_modules = {"up_proj"};
  more.layers_to_transform = {1};
  inject_adapters(m, more);
  CHECK(m.named_parameters(true).size() == 14);
  more.layers_to_transform = {7};
  CHECK(error_of([&] { inject_adapters(m, more); }).find("no module named [\"up_proj\"] in layers [7]") !=
        std::string::npos);
  InjectionSpec bad;
  bad.target_modules = {"q_proj", "qkv_proj"};
  TinyModel m2(1);
  CHECK(error_of([&] { inject_adapters(m2, bad); })
            .find("target modules [\"qkv_proj\"] match no Linear of the model (its Linear names: [\"down_proj\", "
                  "\"lm_head\", \"q_proj\", \"up_proj\", \"v_proj\"])") != std::string::npos);
}

TEST_CASE("inject: save from a model, inject from the file into a fresh model: same outputs (every type)") {
  MultiLoraConfig multilora;
  multilora.r = 4;
  multilora.n_modules = 2;
  SmoraConfig smora;
  smora.r = 4;
  smora.top_k = 2;
  const std::vector<std::shared_ptr<const AdapterConfig>> configs = {
      std::make_shared<LoraConfig>(), std::make_shared<MultiLoraConfig>(multilora), std::make_shared<SmoraConfig>(smora),
      std::make_shared<DoraConfig>()};
  REQUIRE(configs.size() == adapter_types().size());
  for (const auto& config : configs) {
    INFO(config->type().name);
    TempDir dir;
    TinyModel a(3);
    InjectionSpec spec;
    spec.adapter = config;
    spec.target_modules = {"q_proj", "up_proj"};
    inject_adapters(a, spec);
    randomise_adapters(a, 50);
    a.eval();
    Tensor x = random_tensor({4, kHidden}, 4, DType::f32);
    Tensor ya = a.forward(x).data();
    save_adapter(dir.path.string(), find_adapters(a), {"tiny"});

    TinyModel b(3);  // same base weights
    auto loaded = inject_adapter_from_file(b, dir.path.string());
    CHECK(loaded.size() == 2 * kLayers);
    b.eval();
    CHECK(max_abs_diff(b.forward(x).data(), ya) == 0.0);
    CHECK(b.state_dict().size() == a.state_dict().size());
  }
  // A file naming modules the model lacks.
  TempDir dir;
  TinyModel a(3);
  InjectionSpec spec;
  spec.target_modules = {"lm_head"};
  inject_adapters(a, spec);
  save_adapter(dir.path.string(), find_adapters(a));
  struct Headless : Module {
    Headless() : Module("Headless") {
      register_module<UnaryModule>("lm_head", std::make_shared<RMSNorm>(kHidden));
    }
  } headless;
  CHECK(error_of([&] { inject_adapter_from_file(headless, dir.path.string()); })
            .find("'lm_head' is a RMSNorm, not a Linear") != std::string::npos);
}

TEST_CASE("inject: merge for export: base names only, merged values, outputs equal; unmerge restores") {
  TinyModel m(5);
  auto original = m.ordered_state_dict();
  std::vector<Tensor> original_values;
  for (auto& [n, t] : original) original_values.push_back(t.clone());
  MultiLoraConfig multilora;
  multilora.r = 4;
  multilora.n_modules = 2;
  InjectionSpec spec;
  spec.adapter = std::make_shared<MultiLoraConfig>(multilora);
  spec.target_modules = {"q_proj", "v_proj", "up_proj", "down_proj"};
  inject_adapters(m, spec);
  randomise_adapters(m, 70);
  m.eval();
  Tensor x = random_tensor({3, kHidden}, 6, DType::f32);
  Tensor y = m.forward(x).data();
  CHECK(error_of([&] { merged_base_state_dict(m); }).find("is not merged") != std::string::npos);
  merge_adapters(m);
  CHECK(max_abs_diff(m.forward(x).data(), y) < 1e-5);
  auto merged = merged_base_state_dict(m);
  REQUIRE(merged.size() == original.size());
  for (size_t i = 0; i < merged.size(); ++i) CHECK(merged[i].first == original[i].first);
  auto adapters = find_adapters(m);
  // q_proj of layer 0 holds W0 + dW.
  Tensor w = m.state_dict().at("model.layers.0.self_attn.q_proj.weight");
  size_t qi = 0;
  while (original[qi].first != "model.layers.0.self_attn.q_proj.weight") ++qi;
  CHECK(max_abs_diff(w, original_values[qi] + adapters[0].adapter->delta_weight()) < 1e-6);
  unmerge_adapters(m);
  for (size_t i = 0; i < original.size(); ++i) CHECK(max_abs_diff(m.state_dict().at(original[i].first), original_values[i]) < 1e-6);
  CHECK(max_abs_diff(m.forward(x).data(), y) < 1e-5);
}

TEST_CASE("inject: SMoRA bias is a module buffer; moving the model to f64 carries the adapters along") {
  TinyModel m(7);
  SmoraConfig smora;
  smora.r = 4;
  smora.top_k = 1;
  smora.bias_update_rate = 0.5;
  InjectionSpec spec;
  spec.adapter = std::make_shared<SmoraConfig>(smora);
  spec.target_modules = {"up_proj"};
  auto adapters = inject_adapters(m, spec);
  auto buffers = m.named_buffers();
  CHECK(buffers.size() == static_cast<size_t>(kLayers));
  CHECK(buffers[0].first == "model.layers.0.mlp.up_proj.smora_bias");
  CHECK(m.named_parameters(true).size() == static_cast<size_t>(3 * kLayers));  // A, B, router
  m.train();
  Tensor x = random_tensor({16, kHidden}, 8, DType::f32);
  m.forward(x);
  auto* sm = dynamic_cast<SmoraLinear*>(adapters[0].adapter);
  REQUIRE(sm != nullptr);
  sm->update_load_balance();
  CHECK(max_abs_diff(m.state_dict().at("model.layers.0.mlp.up_proj.smora_bias"), sm->selection_bias()) == 0.0);
  CHECK(amax(abs(sm->selection_bias())).item<double>() == 0.5);

  randomise_adapters(m, 90);
  m.eval();
  Tensor y32 = m.forward(x).data();
  m.to(DType::f64);
  CHECK(sm->lora_A().dtype() == DType::f64);
  CHECK(sm->base_weight().dtype() == DType::f64);
  Tensor y64 = m.forward(cast(x, DType::f64)).data();
  CHECK(max_abs_diff(cast(y64, DType::f32), y32) < 1e-4);
}

// DoRA made awaiting its base weight (multilora/dora.h; what a sharded base needs,
// dist/sharded_base.h): the same A and B as DoRA made at once; every read of the magnitude before
// init_from_base_weight or a file gives it is an error naming the adapter; the initialised
// magnitude equals the immediate one; a weight with no values (one zero broadcast, as a sharded
// base's released layer holds) refuses initialisation, the weight norm and merging, with a message
// saying so; types that read nothing of the base weight never await it.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>

#include "autograd/functions.h"
#include "llama/model.h"
#include "multilora/dora.h"
#include "multilora/inject.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
#include "tests/llama/tiny_config.h"
#include "tests/multilora/test_helpers.h"

namespace fs = std::filesystem;
using namespace mlr;
using namespace mlr::test;

namespace {

// The tiny LLaMA, the same random weights each time.
std::unique_ptr<LlamaForCausalLM> tiny_model() {
  Generator init(2026);
  return std::make_unique<LlamaForCausalLM>(tiny_config(), &init);
}

std::vector<NamedAdapter> inject_dora(Module& model, bool awaiting) {
  InjectionSpec spec;
  spec.adapter = std::make_shared<DoraConfig>();
  spec.target_modules = {"q_proj", "v_proj"};
  spec.seed = 5;
  spec.defer_base_weight_reads = awaiting;
  return inject_adapters(model, spec);
}

const DoraLinear& dora(const NamedAdapter& a) { return dynamic_cast<const DoraLinear&>(*a.adapter); }

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.to_vector<double>() == b.to_vector<double>();
}

}  // namespace

TEST_CASE("dora awaiting its base weight: reads are errors naming the adapter until initialised, then as made at once") {
  auto at_once_model = tiny_model(), awaiting_model = tiny_model();
  const auto at_once = inject_dora(*at_once_model, false);
  const auto awaiting = inject_dora(*awaiting_model, true);
  REQUIRE(at_once.size() == 4);  // q_proj and v_proj of 2 layers
  REQUIRE(awaiting.size() == 4);
  const Variable x(random_tensor({3, 32}, 4, DType::f32));
  for (size_t i = 0; i < awaiting.size(); ++i) {
    CAPTURE(awaiting[i].module_path);
    CHECK(!at_once[i].adapter->awaits_base_weight());
    CHECK(awaiting[i].adapter->awaits_base_weight());
    CHECK(bitwise_equal(dora(awaiting[i]).lora_A().data(), dora(at_once[i]).lora_A().data()));
    const std::string named = "DoRA adapter '" + awaiting[i].module_path + "'";
    CHECK_THROWS_WITH_AS(dora(awaiting[i]).magnitude(), doctest::Contains(named.c_str()), Error);
    CHECK_THROWS_WITH_AS(awaiting[i].adapter->forward(x), doctest::Contains(named.c_str()), Error);
    CHECK_THROWS_WITH_AS(awaiting[i].adapter->delta_weight(), doctest::Contains(named.c_str()), Error);
    CHECK_THROWS_WITH_AS(awaiting[i].adapter->merge(), doctest::Contains(named.c_str()), Error);
    // Never a plausible value behind the checks: the stored magnitude is NaN.
    for (double m : awaiting[i].adapter->named_tensors().back().second.data().to_vector<double>()) CHECK(std::isnan(m));
  }
  const fs::path dir = fs::temp_directory_path() / ("mlr_dora_awaiting_" + std::to_string(::getpid()));
  CHECK_THROWS_WITH_AS(save_adapter(dir.string(), awaiting), doctest::Contains("'model.layers.0.self_attn.q_proj' still awaits"), Error);

  for (const NamedAdapter& a : awaiting) a.adapter->init_from_base_weight();
  for (size_t i = 0; i < awaiting.size(); ++i) {
    CAPTURE(awaiting[i].module_path);
    CHECK(!awaiting[i].adapter->awaits_base_weight());
    CHECK(bitwise_equal(dora(awaiting[i]).magnitude().data(), dora(at_once[i]).magnitude().data()));
    CHECK(bitwise_equal(awaiting[i].adapter->forward(x).data(), at_once[i].adapter->forward(x).data()));
    CHECK_THROWS_WITH_AS(awaiting[i].adapter->init_from_base_weight(), doctest::Contains("does not await"), Error);
  }

  // A file gives the magnitudes: no base weight read.
  save_adapter(dir.string(), at_once);
  auto loaded_model = tiny_model();
  const auto loaded = inject_dora(*loaded_model, true);
  load_adapter(dir.string(), loaded);
  for (size_t i = 0; i < loaded.size(); ++i) {
    CHECK(!loaded[i].adapter->awaits_base_weight());
    CHECK(bitwise_equal(dora(loaded[i]).magnitude().data(), dora(at_once[i]).magnitude().data()));
  }
  fs::remove_all(dir);
}

TEST_CASE("dora: a base weight without values (a released sharded layer) is refused by name, never read as zeros") {
  Variable released(zeros({1, 1}, DType::f32).expand({6, 5}));
  Generator gen(1);
  DoraConfig config;
  auto adapter = config.make_adapter_awaiting_base_weight(released, Variable(), gen, 0);
  adapter->set_module_path("model.layers.3.mlp.down_proj");
  CHECK_THROWS_WITH_AS(adapter->init_from_base_weight(),
                       doctest::Contains("of the DoRA adapter 'model.layers.3.mlp.down_proj' holds no values"), Error);
  CHECK(adapter->awaits_base_weight());
  // Made at once, it would take the norm of nothing.
  Generator gen2(1);
  CHECK_THROWS_WITH_AS(config.make_adapter(released, Variable(), gen2, 0), doctest::Contains("holds no values"), Error);
  // Given values (gathered), it initialises; released again, the forward's weight norm and a merge
  // refuse it.
  Variable weight(random_tensor({6, 5}, 7, DType::f32));
  Generator gen3(1);
  auto on_values = config.make_adapter_awaiting_base_weight(weight, Variable(), gen3, 0);
  on_values->init_from_base_weight();
  weight.set_data(zeros({1, 1}, DType::f32).expand({6, 5}));
  CHECK_THROWS_WITH_AS(on_values->forward(Variable(random_tensor({2, 5}, 8, DType::f32))),
                       doctest::Contains("holds no values"), Error);
  CHECK_THROWS_WITH_AS(on_values->merge(), doctest::Contains("adapter merge: the base weight [6, 5]"), Error);
}

TEST_CASE("adapter types that read nothing of the base weight are never made awaiting it") {
  CHECK(dora_adapter_type().initialises_from_base_weight);
  SmoraConfig smora;
  smora.r = 4;
  smora.top_k = 2;
  const std::vector<std::shared_ptr<const AdapterConfig>> configs = {
      std::make_shared<LoraConfig>(), std::make_shared<MultiLoraConfig>(), std::make_shared<SmoraConfig>(smora)};
  for (const auto& config : configs) {
    CAPTURE(config->type().name);
    CHECK(!config->type().initialises_from_base_weight);
    Generator gen(1);
    auto adapter = config->make_adapter_awaiting_base_weight(Variable(zeros({1, 1}, DType::f32).expand({8, 6})),
                                                             Variable(), gen, 0);
    CHECK(!adapter->awaits_base_weight());
  }
}

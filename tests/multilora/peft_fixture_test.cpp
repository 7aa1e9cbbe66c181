// Against PEFT (scripts/fixtures/make_lora_fixtures.py): its LoRA adapter directories load here,
// and our LoRA reproduces PEFT's output and the gradients of A, B and x for a fixed upstream
// gradient. With MLR_ADAPTER_EXPORT_DIR set, a test also writes our own save of the same adapter
// there, which the script then loads with PEFT.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "llama/safetensors.h"
#include "multilora/adapter_file.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
#include "tests/multilora/test_helpers.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

const fs::path kFixtures = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures" / "multilora";
const char* kModule = "proj";

struct Reference {
  std::map<std::string, Tensor> t;
  explicit Reference(const std::string& name) {
    for (auto& [k, v] : load_checkpoint_tensors((kFixtures / (name + "_reference.safetensors")).string())) t[k] = v;
  }
  const Tensor& operator[](const std::string& k) const { return t.at(k); }
};

// Our LoRA layer built from a PEFT directory's config around the fixture's base weight and bias.
std::unique_ptr<LoraLinear> load_peft(const std::string& name, const Reference& ref) {
  std::string dir = (kFixtures / name).string();
  AdapterFile file = read_adapter_file(dir);
  REQUIRE(adapter_module_paths(file) == std::vector<std::string>{kModule});
  LoraConfig cfg = lora_config_from_json(file.config);
  Generator gen(0);
  auto lora = std::make_unique<LoraLinear>(ref["weight"].clone(), ref["bias"].clone(), cfg, gen);
  load_adapter(dir, {{kModule, lora.get()}});
  return lora;
}

}  // namespace

TEST_CASE("peft fixture: PEFT's LoRA and rsLoRA adapters load and reproduce its output and gradients") {
  for (const char* name : {"peft_lora", "peft_rslora"}) {
    INFO(name);
    Reference ref(name);
    auto lora = load_peft(name, ref);
    CHECK(lora->config().r == 4);
    CHECK(lora->config().alpha == 8.0);
    CHECK(lora->scaling() == (std::string(name) == "peft_rslora" ? 4.0 : 2.0));
    CHECK(max_abs_diff(lora->lora_A().data(), ref["lora_A"]) == 0.0);
    CHECK(max_abs_diff(lora->lora_B().data(), ref["lora_B"]) == 0.0);

    Variable x = Variable::leaf(ref["x"].clone());
    Variable y = lora->forward(x);
    CHECK(max_abs_diff(y.data(), ref["out"]) < 2e-6);
    y.backward(ref["grad_out"]);
    CHECK(max_abs_diff(lora->lora_A().grad(), ref["grad_lora_A"]) < 1e-5);
    CHECK(max_abs_diff(lora->lora_B().grad(), ref["grad_lora_B"]) < 1e-5);
    CHECK(max_abs_diff(x.grad(), ref["grad_x"]) < 1e-5);
    // Merged, the plain product gives the same output.
    lora->merge();
    CHECK(max_abs_diff(lora->forward(ref["x"]).data(), ref["out"]) < 1e-5);
  }
}

TEST_CASE("peft fixture: exports a PEFT-loadable adapter (checked by the fixture script)") {
  const char* out = std::getenv("MLR_ADAPTER_EXPORT_DIR");
  for (const char* name : {"peft_lora", "peft_rslora"}) {
    Reference ref(name);
    auto lora = load_peft(name, ref);
    // Our save reloads here with identical tensors; PEFT's own loading is checked by the script.
    fs::path dir = out ? fs::path(out) / name
                       : fs::temp_directory_path() / ("mlr_peft_export_" + std::to_string(::getpid()) + name);
    save_adapter(dir.string(), {{kModule, lora.get()}}, {"", ""});
    Generator other_seed(5);
    LoraLinear again_layer(ref["weight"].clone(), ref["bias"].clone(), lora->config(), other_seed);
    LoraLinear* again = &again_layer;
    load_adapter(dir.string(), {{kModule, again}});
    CHECK(max_abs_diff(again->lora_A().data(), ref["lora_A"]) == 0.0);
    CHECK(max_abs_diff(again->lora_B().data(), ref["lora_B"]) == 0.0);
    if (!out) fs::remove_all(dir);
  }
}

// DoRA against PEFT's LoraConfig(use_dora=True) (scripts/fixtures/make_dora_fixtures.py): PEFT's
// adapter directories load through the registry, and our DoRA reproduces PEFT's output, the
// gradients of A, B, the magnitude and x, the dropout branch (with PEFT's mask), and the merged
// weight, on a single Linear and on every projection of the tiny LLaMA. With MLR_ADAPTER_EXPORT_DIR
// set, two tests also write our own DoRA adapter and merged checkpoint there, which the fixture
// script loads with PEFT and transformers.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "autograd/functions.h"
#include "llama/safetensors.h"
#include "multilora/dora.h"
#include "multilora/export.h"
#include "multilora/inject.h"
#include "tests/multilora/test_helpers.h"

namespace fs = std::filesystem;
using namespace mlr;
using namespace mlr::test;

namespace {

const fs::path kFixtures = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures";
const fs::path kDora = kFixtures / "multilora" / "peft_dora";
const fs::path kLlama = kFixtures / "llama" / "models" / "llama3_gqa";
const fs::path kLlamaDora = kFixtures / "multilora" / "peft_llama_dora";
const char* kModule = "proj";

std::map<std::string, Tensor> reference(const std::string& name) {
  std::map<std::string, Tensor> t;
  for (auto& [k, v] : load_checkpoint_tensors((kFixtures / "multilora" / (name + "_reference.safetensors")).string()))
    t[k] = v;
  return t;
}

double rel_error(const Tensor& a, const Tensor& b) {
  return max_abs_diff(a, b) / std::max(1e-12, amax(abs(cast(b, DType::f64))).item<double>());
}

// Our DoRA around the fixture's base weight and bias, built from PEFT's directory through the registry.
std::unique_ptr<DoraLinear> load_peft_dora(const std::map<std::string, Tensor>& ref, uint64_t dropout_seed = 0) {
  AdapterFile file = read_adapter_file(kDora.string());
  const AdapterType& type = adapter_type_of_file(file.config);
  REQUIRE(&type == &dora_adapter_type());
  REQUIRE(adapter_module_paths(file) == std::vector<std::string>{kModule});
  Generator gen(0);
  std::unique_ptr<AdaptedLinear> made =
      type.from_json(file.config)->make_adapter(ref.at("weight").clone(), ref.at("bias").clone(), gen, dropout_seed);
  std::unique_ptr<DoraLinear> dora(dynamic_cast<DoraLinear*>(made.release()));
  REQUIRE(dora != nullptr);
  load_adapter(kDora.string(), {{kModule, dora.get()}});
  return dora;
}

}  // namespace

TEST_CASE("dora: PEFT's DoRA loads and reproduces its output, gradients and merged weight") {
  const auto ref = reference("peft_dora");
  auto dora = load_peft_dora(ref);
  CHECK(dora->scaling() == 2.0);
  CHECK(max_abs_diff(dora->magnitude().data(), ref.at("magnitude")) == 0.0);
  dora->train(false);
  Variable x = Variable::leaf(ref.at("x").clone());
  Variable y = dora->forward(x);
  CHECK(max_abs_diff(y.data(), ref.at("out")) < 2e-6);
  y.backward(ref.at("grad_out"));
  CHECK(max_abs_diff(dora->lora_A().grad(), ref.at("grad_lora_A")) < 1e-5);
  CHECK(max_abs_diff(dora->lora_B().grad(), ref.at("grad_lora_B")) < 1e-5);
  CHECK(max_abs_diff(dora->magnitude().grad(), ref.at("grad_magnitude")) < 1e-5);
  CHECK(max_abs_diff(x.grad(), ref.at("grad_x")) < 1e-5);
  // The dense change, then merge: W0 <- (m/n) o (W0 + s B A), PEFT's merged weight; unmerge restores W0.
  CHECK(max_abs_diff(add(ref.at("weight"), dora->delta_weight()), ref.at("merged_weight")) < 2e-6);
  dora->merge();
  CHECK(max_abs_diff(dora->base_weight(), ref.at("merged_weight")) < 2e-6);
  CHECK(max_abs_diff(dora->forward(ref.at("x")).data(), ref.at("out")) < 1e-5);
  CHECK(max_abs_diff(add(ref.at("weight"), dora->delta_weight()), ref.at("merged_weight")) < 2e-6);
  dora->unmerge();
  CHECK(max_abs_diff(dora->base_weight(), ref.at("weight")) < 1e-6);
}

TEST_CASE("dora: the dropout branch matches PEFT's with its mask, and our forward draws its masks the same way") {
  const auto ref = reference("peft_dora");
  auto dora = load_peft_dora(ref);
  // PEFT with dropout: W0 x + bias + (m/n - 1) o W0 x' + (m/n) o s B A x', x' the dropped-out input.
  const Tensor w0 = ref.at("weight");
  auto with_mask = [&](const Variable& x, const Tensor& mask) {
    Variable xd = mul(x, Variable(mask));
    Variable base = linear(x, Variable(w0), Variable(ref.at("bias")));
    return add(base, dora_update(linear(xd, Variable(w0)), xd, dora->lora_A(), dora->lora_B(), dora->magnitude(),
                                 dora->weight_norm(), dora->scaling()));
  };
  Variable x = Variable::leaf(ref.at("x").clone());
  Variable y = with_mask(x, ref.at("dropout_mask"));
  CHECK(max_abs_diff(y.data(), ref.at("dropout_out")) < 2e-6);
  y.backward(ref.at("grad_out"));
  CHECK(max_abs_diff(dora->lora_A().grad(), ref.at("dropout_grad_lora_A")) < 1e-5);
  CHECK(max_abs_diff(dora->lora_B().grad(), ref.at("dropout_grad_lora_B")) < 1e-5);
  CHECK(max_abs_diff(dora->magnitude().grad(), ref.at("dropout_grad_magnitude")) < 1e-5);
  CHECK(max_abs_diff(x.grad(), ref.at("dropout_grad_x")) < 1e-5);

  // Our train-mode forward with dropout 0.5 is that same function with the mask of its own stream.
  auto file = read_adapter_file(kDora.string());
  file.config["lora_dropout"] = 0.5;
  Generator gen(0);
  const uint64_t seed = 99;
  auto dropping = adapter_type_of_file(file.config).from_json(file.config)->make_adapter(w0.clone(), ref.at("bias").clone(), gen, seed);
  load_adapter(kDora.string(), {{kModule, dropping.get()}});
  Generator same_stream(seed);
  const Tensor ones = ones_like(ref.at("x"));
  const Tensor mask = adapter_dropout(Variable(ones), 0.5, same_stream).data();
  CHECK(max_abs_diff(dropping->forward(ref.at("x")).data(), with_mask(Variable(ref.at("x")), mask).data()) < 1e-6);
  dropping->train(false);
  CHECK(max_abs_diff(dropping->forward(ref.at("x")).data(), ref.at("out")) < 2e-6);
}

TEST_CASE("dora: starts as the base layer; a file without its magnitude does not load") {
  const auto ref = reference("peft_dora");
  Generator gen(3);
  DoraLinear fresh(ref.at("weight").clone(), ref.at("bias").clone(), DoraConfig(), gen);
  CHECK(max_abs_diff(fresh.forward(ref.at("x")).data(), linear(Variable(ref.at("x")), Variable(ref.at("weight")),
                                                               Variable(ref.at("bias"))).data()) < 1e-6);
  // m = ||W0||_row.
  CHECK(max_abs_diff(fresh.magnitude().data(), sqrt(sum(square(ref.at("weight")), {1}))) < 1e-6);
  // A LoRA file (no magnitude, use_dora false) into a DoRA adapter: both differences are named.
  const std::string e = error_of([&] {
    load_adapter((kFixtures / "multilora" / "peft_lora").string(), {{kModule, &fresh}});
  });
  CHECK(e.find("config field \"use_dora\" is false in the file, true in the model") != std::string::npos);
  CHECK(e.find("missing tensor 'base_model.model.proj.lora_magnitude_vector'") != std::string::npos);
}

TEST_CASE("dora: exports a PEFT-loadable adapter (checked by the fixture script)") {
  const char* out = std::getenv("MLR_ADAPTER_EXPORT_DIR");
  const auto ref = reference("peft_dora");
  auto dora = load_peft_dora(ref);
  const fs::path dir = out ? fs::path(out) / "peft_dora"
                           : fs::temp_directory_path() / ("mlr_dora_export_" + std::to_string(::getpid()));
  save_adapter(dir.string(), {{kModule, dora.get()}}, {"", ""});
  const AdapterFile file = read_adapter_file(dir.string());
  CHECK(file.config.at("peft_type") == "LORA");
  CHECK(file.config.at("use_dora") == true);
  CHECK(file.tensors.count("base_model.model.proj.lora_magnitude_vector") == 1);
  auto again = load_peft_dora(ref);
  load_adapter(dir.string(), {{kModule, again.get()}});
  CHECK(max_abs_diff(again->magnitude().data(), ref.at("magnitude")) == 0.0);
  if (!out) fs::remove_all(dir);
}

TEST_CASE("dora llama: PEFT's DoRA on every projection gives PEFT's logits, loss and adapter gradients") {
  auto model = LlamaForCausalLM::from_pretrained(kLlama.string());
  auto adapters = inject_adapter_from_file(*model, kLlamaDora.string());
  CHECK(adapters.size() == 14);  // 2 layers x 7 projections
  const auto ref = reference("peft_llama_dora");
  LlamaBatch batch;
  batch.input_ids = ref.at("input_ids");
  batch.labels = ref.at("labels");
  model->train();
  CausalLMOutput out = model->forward(batch);
  const double logits_err = rel_error(out.logits.data(), ref.at("logits"));
  MESSAGE("dora llama: logits rel error " << logits_err);
  CHECK(logits_err < 1e-5);
  CHECK(rel_error(out.loss.data(), ref.at("loss")) < 1e-5);
  out.loss.backward();
  CHECK(model->named_parameters(true).size() == 42);  // A, B, m per module
  double worst = 0;
  for (auto& na : adapters)
    for (auto& [name, v] : na.adapter->named_tensors()) {
      const std::string key = "grad." + adapter_tensor_key(na.module_path, name);
      CAPTURE(key);
      REQUIRE(ref.count(key));
      REQUIRE(v.grad().defined());
      worst = std::max(worst, rel_error(v.grad(), ref.at(key)));
    }
  MESSAGE("dora llama: worst adapter gradient rel error " << worst);
  CHECK(worst < 1e-4);
}

TEST_CASE("dora llama: merged and exported, the checkpoint reloads with the adapted logits") {
  auto model = LlamaForCausalLM::from_pretrained(kLlama.string());
  inject_adapter_from_file(*model, kLlamaDora.string());
  const auto ref = reference("peft_llama_dora");
  LlamaBatch batch;
  batch.input_ids = ref.at("input_ids");
  model->eval();
  NoGradGuard no_grad;
  const Tensor adapted = model->forward(batch).logits.data();
  CHECK(rel_error(adapted, ref.at("logits")) < 1e-5);
  const char* out = std::getenv("MLR_ADAPTER_EXPORT_DIR");
  const fs::path dir = out ? fs::path(out) / "merged_llama_dora"
                           : fs::temp_directory_path() / ("mlr_merged_llama_dora_" + std::to_string(::getpid()));
  save_merged_pretrained(*model, dir.string());
  for (auto& na : find_adapters(*model)) CHECK(!na.adapter->merged());
  CHECK(rel_error(model->forward(batch).logits.data(), adapted) < 1e-6);
  auto reloaded = LlamaForCausalLM::from_pretrained(dir.string());
  const double err = rel_error(reloaded->forward(batch).logits.data(), adapted);
  MESSAGE("dora llama: merged checkpoint logits rel error " << err);
  CHECK(err < 1e-5);
  if (!out) fs::remove_all(dir);
}

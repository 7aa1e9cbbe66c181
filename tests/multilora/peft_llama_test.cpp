// PEFT's LoRA on a tiny LLaMA (all seven projections; scripts/fixtures/make_lora_fixtures.py):
// the adapter directory injects into our LlamaForCausalLM, and logits, loss and every adapter
// gradient match PEFT's; merged and exported, the checkpoint reloads with the same logits (the
// fixture script also loads it with transformers).
#include <doctest/doctest.h>

#include "tests/test_support.h"
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "llama/safetensors.h"
#include "multilora/export.h"
#include "multilora/inject.h"
#include "tests/multilora/test_helpers.h"

namespace fs = std::filesystem;
using namespace mlr;

namespace {

const fs::path kRoot = fs::path(MLR_SOURCE_DIR) / "tests" / "fixtures";
const fs::path kBase = kRoot / "llama" / "models" / "llama3_gqa";
const fs::path kAdapter = kRoot / "multilora" / "peft_llama_lora";
const fs::path kReference = kRoot / "multilora" / "peft_llama_reference.safetensors";

double rel_error(const Tensor& a, const Tensor& b) {
  return max_abs_diff(a, b) / std::max(1e-12, amax(abs(cast(b, DType::f64))).item<double>());
}

bool fixtures_present() {
  if (fs::exists(kBase / "model.safetensors") && fs::exists(kReference)) return true;
  return false;
}

}  // namespace

TEST_CASE("peft llama: PEFT's LoRA on every projection gives PEFT's logits, loss and adapter gradients" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(fixtures_present(), "the tiny LLaMA fixture (scripts/fixtures) is missing");
  auto model = LlamaForCausalLM::from_pretrained(kBase.string());
  auto adapters = inject_adapter_from_file(*model, kAdapter.string());
  CHECK(adapters.size() == 14);  // 2 layers x 7 projections
  SafetensorsFile ref = SafetensorsFile::open(kReference.string());
  LlamaBatch batch;
  batch.input_ids = ref.get("input_ids");
  batch.labels = ref.get("labels");
  model->train();
  CausalLMOutput out = model->forward(batch);
  const double logits_err = rel_error(out.logits.data(), ref.get("logits"));
  const double loss_err = rel_error(out.loss.data(), ref.get("loss"));
  MESSAGE("peft llama: logits rel error " << logits_err << ", loss rel error " << loss_err);
  CHECK(logits_err < 1e-5);
  CHECK(loss_err < 1e-5);
  out.loss.backward();
  auto trainable = model->named_parameters(true);
  CHECK(trainable.size() == 28);
  double worst = 0;
  for (auto& na : adapters)
    for (auto& [name, v] : na.adapter->named_tensors()) {
      const std::string key = adapter_tensor_key(na.module_path, name);
      CAPTURE(key);
      REQUIRE(ref.contains("grad." + key));
      REQUIRE(v.grad().defined());
      const double err = rel_error(v.grad(), ref.get("grad." + key));
      CHECK(err < 1e-4);
      worst = std::max(worst, err);
    }
  MESSAGE("peft llama: worst adapter gradient rel error " << worst);
  // No base parameter got a gradient.
  for (auto& [name, p] : model->named_parameters())
    if (!p.requires_grad()) CHECK_MESSAGE(!p.grad().defined(), name);
}

TEST_CASE("peft llama: merged Hugging Face checkpoint reloads with the adapted logits" * mlr_test::needs_external) {
  MLR_SKIP_UNLESS(fixtures_present(), "the tiny LLaMA fixture (scripts/fixtures) is missing");
  auto model = LlamaForCausalLM::from_pretrained(kBase.string());
  inject_adapter_from_file(*model, kAdapter.string());
  SafetensorsFile ref = SafetensorsFile::open(kReference.string());
  LlamaBatch batch;
  batch.input_ids = ref.get("input_ids");
  model->eval();
  NoGradGuard no_grad;
  Tensor adapted = model->forward(batch).logits.data();

  const char* out = std::getenv("MLR_ADAPTER_EXPORT_DIR");
  fs::path dir = out ? fs::path(out) / "merged_llama"
                     : fs::temp_directory_path() / ("mlr_merged_llama_" + std::to_string(::getpid()));
  save_merged_pretrained(*model, dir.string());
  for (auto& na : find_adapters(*model)) CHECK(!na.adapter->merged());  // left as it was
  // Merge then unmerge restores W0 to f32 rounding, so the logits move by rounding only.
  CHECK(rel_error(model->forward(batch).logits.data(), adapted) < 1e-6);

  auto reloaded = LlamaForCausalLM::from_pretrained(dir.string());  // strict: no adapter tensors in it
  CHECK(find_adapters(*reloaded).empty());
  const double err = rel_error(reloaded->forward(batch).logits.data(), adapted);
  MESSAGE("peft llama: merged checkpoint logits rel error " << err);
  CHECK(err < 1e-5);
  CHECK(rel_error(adapted, ref.get("logits")) < 1e-5);
  if (!out) fs::remove_all(dir);
}

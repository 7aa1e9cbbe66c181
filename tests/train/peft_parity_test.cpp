// Issue 7's parity check: a LoRA fine-tuning run of 20 steps on the demo model reproduces, step by
// step, the loss sequence of the same run in transformers + PEFT + torch.optim.AdamW (same initial
// adapter, same batches with padding and ignored labels, 2 micro-batches per step, clipping at 1.0,
// cosine schedule with warmup and floor), in f32 on the CPU. The reference comes from
// scripts/fixtures/make_lora_training_fixture.py (tests/fixtures/train/lora_run).
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include <nlohmann/json.hpp>

#include "autograd/functions.h"
#include "llama/model.h"
#include "llama/safetensors.h"
#include "multilora/inject.h"
#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/lr_schedule.h"

using namespace mlr;

TEST_CASE("LoRA training matches transformers + PEFT + torch AdamW step by step (f32, CPU)") {
  const std::string dir = std::string(MLR_SOURCE_DIR) + "/tests/fixtures/train/lora_run";
  std::ifstream in(dir + "/reference.json");
  REQUIRE(in.good());
  const nlohmann::json ref = nlohmann::json::parse(in);
  const auto batches = load_checkpoint_tensors(dir + "/batches.safetensors", DType::i64);
  const Tensor& input_ids = batches.at("input_ids");
  const Tensor& attention_mask = batches.at("attention_mask");
  const Tensor& labels = batches.at("labels");

  auto model = LlamaForCausalLM::from_pretrained(std::string(MLR_SOURCE_DIR) + "/configs/demo/model", DType::f32);
  LoraConfig lora;
  lora.r = ref.at("r").get<int64_t>();
  lora.alpha = ref.at("alpha").get<double>();
  InjectionSpec spec;
  spec.adapter = std::make_shared<LoraConfig>(lora);
  spec.target_modules = ref.at("target_modules").get<std::vector<std::string>>();
  const std::vector<NamedAdapter> adapters = inject_adapters(*model, spec);
  load_adapter(dir + "/initial_adapter", adapters);
  model->train();

  AdamWOptions adam;
  adam.lr = ref.at("lr").get<double>();
  adam.weight_decay = ref.at("weight_decay").get<double>();
  NoDecayRules decay_everything;  // torch's AdamW decays every LoRA parameter
  decay_everything.patterns.clear();
  AdamW optimizer(make_param_groups(model->named_parameters(true), adam, decay_everything));
  LrSchedule schedule;
  schedule.kind = LrScheduleKind::cosine;
  schedule.base_lr = adam.lr;
  schedule.warmup_steps = ref.at("warmup_steps").get<int64_t>();
  schedule.total_steps = ref.at("steps").get<int64_t>();
  schedule.min_lr_ratio = ref.at("min_lr_ratio").get<double>();
  const std::vector<Variable> params = optimizer.parameters();

  const int64_t steps = ref.at("steps").get<int64_t>(), accum = ref.at("grad_accum").get<int64_t>();
  const auto want_loss = ref.at("losses").get<std::vector<double>>();
  const auto want_norm = ref.at("grad_norms").get<std::vector<double>>();
  const auto want_lr = ref.at("lrs").get<std::vector<double>>();
  double worst_loss = 0, worst_norm = 0;
  for (int64_t step = 0; step < steps; ++step) {
    optimizer.set_lr_factor(schedule.factor(step));
    double loss_sum = 0;
    for (int64_t micro = 0; micro < accum; ++micro) {
      const int64_t i = step * accum + micro;
      LlamaBatch batch;
      batch.input_ids = input_ids.select(0, i).contiguous();
      batch.attention_mask = attention_mask.select(0, i).contiguous();
      batch.labels = labels.select(0, i).contiguous();
      const Variable loss = model->forward(batch).loss;
      loss_sum += loss.item<float>() / static_cast<double>(accum);
      mul(loss, 1.0 / static_cast<double>(accum)).backward();
    }
    const double norm = clip_grad_norm_(params, ref.at("clip").get<double>());
    CHECK(schedule.lr(step) == doctest::Approx(want_lr[step]).epsilon(1e-12));
    optimizer.step();
    optimizer.zero_grad();
    const double loss_rel = std::abs(loss_sum - want_loss[step]) / std::abs(want_loss[step]);
    const double norm_rel = std::abs(norm - want_norm[step]) / std::abs(want_norm[step]);
    worst_loss = std::max(worst_loss, loss_rel);
    worst_norm = std::max(worst_norm, norm_rel);
    CHECK_MESSAGE(loss_rel < 1e-4, "step " << step + 1 << ": loss " << loss_sum << ", PEFT " << want_loss[step]);
    CHECK_MESSAGE(norm_rel < 1e-3, "step " << step + 1 << ": grad norm " << norm << ", PEFT " << want_norm[step]);
  }
  MESSAGE("worst relative difference over " << steps << " steps: loss " << worst_loss << ", grad norm " << worst_norm);
}

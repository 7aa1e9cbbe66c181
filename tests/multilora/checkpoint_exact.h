// Exact activation checkpointing with adapters (issue 18, item 1), shared by the CPU test and the
// CUDA test: two identical tiny LLaMA models, one recomputing each decoder layer in backward and
// one keeping its activations, must give bit-identical losses and gradients. With adapter dropout
// 0.1 the recompute must draw each adapter's masks again (every adapter has its own generator),
// every dropout stream must end where the plain run leaves it, and SMoRA must count its rank
// loads once per forward, not again in the recompute.
#pragma once

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "llama/model.h"
#include "tests/llama/tiny_config.h"
#include "multilora/dora.h"
#include "multilora/inject.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
#include "tensor/ops.h"

namespace mlr::test {

// "lora", "dora", "multilora", "smora", or "full" (every model parameter trainable, no adapters).
struct CheckpointedModel {
  std::unique_ptr<LlamaForCausalLM> model;
  std::vector<NamedAdapter> adapters;
};

inline CheckpointedModel make_checkpointing_model(const std::string& kind, Device device, bool checkpointing) {
  LlamaConfig config = tiny_config();  // tests/llama/tiny_config.h, with a third layer
  config.num_hidden_layers = 3;
  config.vocab_size = 61;
  Generator init(2026);
  CheckpointedModel m;
  m.model = std::make_unique<LlamaForCausalLM>(config, &init);
  m.model->to(device);  // before injecting (inject.h)
  m.model->set_gradient_checkpointing(checkpointing);
  if (kind == "full") return m;
  InjectionSpec spec;
  spec.target_modules = {"q_proj", "v_proj", "o_proj", "down_proj"};
  spec.seed = 17;
  if (kind == "lora" || kind == "dora") {
    auto lora = kind == "lora" ? std::make_shared<LoraConfig>() : std::make_shared<DoraConfig>();
    lora->dropout = 0.1;
    spec.adapter = lora;
  } else if (kind == "multilora") {
    auto multilora = std::make_shared<MultiLoraConfig>();
    multilora->dropout = 0.1;
    multilora->r = 8;
    multilora->n_modules = 2;
    spec.adapter = multilora;
  } else {
    REQUIRE(kind == "smora");
    auto smora = std::make_shared<SmoraConfig>();
    smora->dropout = 0.1;
    smora->r = 6;
    smora->top_k = 2;
    spec.adapter = smora;
  }
  m.adapters = inject_adapters(*m.model, spec);
  REQUIRE(m.adapters.size() == 4 * 3);
  // LoRA-style B = 0 would make A's gradient (and the dropout's effect on it) vanish: give every
  // trainable adapter tensor nonzero values, the same in both models.
  Generator values(99);
  for (const NamedAdapter& a : m.adapters)
    for (const auto& [name, v] : a.adapter->named_tensors()) {
      if (!v.requires_grad()) continue;
      Tensor t = v.data();
      t.copy_(mul(randn(t.shape(), values, t.dtype()), 0.2).to(t.device()));
    }
  return m;
}

// Every element equal, compared as f64 on the host (exact for every floating dtype).
inline void require_bitwise_equal(const std::string& what, const Tensor& got, const Tensor& want) {
  REQUIRE_MESSAGE(got.defined(), what << ": undefined");
  REQUIRE_MESSAGE(want.defined(), what << ": undefined in the reference");
  REQUIRE_MESSAGE(got.shape() == want.shape(), what << ": " << shape_str(got.shape()) << " vs " << shape_str(want.shape()));
  const std::vector<double> a = got.to_vector<double>(), b = want.to_vector<double>();
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0 && differ++ == 0) first = i;
  CHECK_MESSAGE(differ == 0, what << ": " << differ << " of " << a.size() << " elements differ, first at " << first
                                  << " (" << a[first] << " checkpointed vs " << b[first] << " plain)");
}

// Two training steps' worth of forward and backward (the second with the generators where the
// first left them), checkpointed against plain.
inline void check_checkpointing_exact(const std::string& kind, Device device) {
  CAPTURE(kind);
  CheckpointedModel ckpt = make_checkpointing_model(kind, device, true);
  CheckpointedModel plain = make_checkpointing_model(kind, device, false);
  const auto ckpt_params = ckpt.model->named_parameters(true), plain_params = plain.model->named_parameters(true);
  REQUIRE(ckpt_params.size() == plain_params.size());
  REQUIRE(!ckpt_params.empty());
  for (int step = 0; step < 2; ++step) {
    CAPTURE(step);
    LlamaBatch batch;
    std::vector<int64_t> ids(2 * 20);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 29 + 7 + 13 * step) % 61);
    batch.input_ids = from_vector(ids, {2, 20});
    batch.labels = batch.input_ids;
    CausalLMOutput got = ckpt.model->forward(batch), want = plain.model->forward(batch);
    require_bitwise_equal("loss", got.loss.data(), want.loss.data());
    got.loss.backward();
    want.loss.backward();
    for (size_t i = 0; i < ckpt_params.size(); ++i) {
      REQUIRE(ckpt_params[i].first == plain_params[i].first);
      require_bitwise_equal("gradient of " + ckpt_params[i].first, ckpt_params[i].second.grad(),
                            plain_params[i].second.grad());
    }
    for (size_t i = 0; i < ckpt.adapters.size(); ++i) {
      CAPTURE(ckpt.adapters[i].module_path);
      AdaptedLinear& a = *ckpt.adapters[i].adapter;
      AdaptedLinear& b = *plain.adapters[i].adapter;
      CHECK(a.dropout_generator().offset() > 0);  // the masks were drawn
      CHECK(a.dropout_generator().offset() == b.dropout_generator().offset());
      if (kind == "smora") {
        const SmoraLoadStats sa = static_cast<SmoraLinear&>(a).load_stats();
        const SmoraLoadStats sb = static_cast<SmoraLinear&>(b).load_stats();
        CHECK(sa.step_counts == sb.step_counts);
        int64_t tokens = 0;
        for (int64_t c : sa.step_counts) tokens += c;
        CHECK(tokens == 2 * 20 * 2 * (step + 1));  // 40 tokens x top_k 2 per forward, counted once
      }
    }
  }
}

}  // namespace mlr::test

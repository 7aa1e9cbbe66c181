// LoRA as PEFT defines it (Hu et al. 2021; rsLoRA: Kalajdzievski 2023):
//   y = W0 x (+ bias) + scaling * B A dropout(x)
//   A [r, in]  Kaiming-uniform with a = sqrt(5)   (torch.nn.init.kaiming_uniform_)
//   B [out, r] zeros, so the update starts at exactly zero
//   scaling = alpha / r, or alpha / sqrt(r) with rsLoRA
// Dropout applies to the adapter's input only, in train mode.
#pragma once

#include <cstdint>
#include <optional>

#include "multilora/adapter.h"

namespace mlr {

struct LoraConfig {
  int64_t r = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  bool use_rslora = false;
  // Adapter parameter dtype; undefined-by-default means default_adapter_dtype(base dtype).
  std::optional<DType> dtype;
  uint64_t dropout_seed = 0;  // the dropout masks' Philox stream
};

// alpha / r, or alpha / sqrt(r) with rsLoRA.
double lora_scaling(double alpha, int64_t r, bool use_rslora);

// The update alone: scaling * B (A x); x [..., in], A [r, in], B [out, r] -> [..., out].
Variable lora_update(const Variable& x, const Variable& A, const Variable& B, double scaling);

class LoraLinear : public AdaptedLinear {
 public:
  // Initialises A from `gen` (Kaiming-uniform, a = sqrt 5) and B to zeros.
  LoraLinear(Variable weight, Variable bias, const LoraConfig& config, Generator& gen);

  AdapterKind kind() const override { return AdapterKind::lora; }
  Generator& dropout_generator() override { return dropout_gen_; }
  Variable forward(const Variable& x) override;
  std::vector<std::pair<std::string, Variable>> named_tensors() const override;
  nlohmann::json config_json() const override;
  Tensor delta_weight() const override;  // scaling * B A

  const LoraConfig& config() const { return config_; }
  double scaling() const { return scaling_; }
  const Variable& lora_A() const { return lora_A_; }
  const Variable& lora_B() const { return lora_B_; }

 private:
  LoraConfig config_;
  double scaling_;
  Variable lora_A_;  // [r, in]
  Variable lora_B_;  // [out, r]
  Generator dropout_gen_;
};

}  // namespace mlr

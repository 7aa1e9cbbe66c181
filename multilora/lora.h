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
#include "multilora/registry.h"

namespace mlr {

struct LoraConfig : AdapterConfig {
  int64_t r = 8;
  double alpha = 8.0;
  double dropout = 0.0;
  bool use_rslora = false;
  // Adapter parameter dtype; undefined-by-default means default_adapter_dtype(base dtype).
  std::optional<DType> dtype;
  uint64_t dropout_seed = 0;  // the dropout masks' Philox stream (make_adapter sets it)

  const AdapterType& type() const override;
  std::unique_ptr<AdaptedLinear> make_adapter(Variable weight, Variable bias, Generator& init,
                                              uint64_t dropout_seed) const override;
  nlohmann::json yaml_fields() const override;
};

// The registration: YAML adapter.type "lora", adapter_config.json with peft_type LORA and no
// use_dora, YAML keys r, alpha, dropout, rslora.
const AdapterType& lora_adapter_type();
// A LORA adapter_config.json (fields as PEFT writes them).
LoraConfig lora_config_from_json(const nlohmann::json& config);
// The fields LoRA and DoRA share (r, lora_alpha, lora_dropout, use_rslora), from a file and from
// the adapter section of a run configuration (defaults there: r 8, alpha 16, dropout 0).
void read_lora_fields(const nlohmann::json& config, LoraConfig& out);
void read_lora_fields(const ConfigFields& section, LoraConfig& out);
nlohmann::json lora_yaml_fields(const LoraConfig& config);

// alpha / r, or alpha / sqrt(r) with rsLoRA.
double lora_scaling(double alpha, int64_t r, bool use_rslora);

// The update alone: scaling * B (A x); x [..., in], A [r, in], B [out, r] -> [..., out].
Variable lora_update(const Variable& x, const Variable& A, const Variable& B, double scaling);

class LoraLinear : public AdaptedLinear {
 public:
  // Initialises A from `gen` (Kaiming-uniform, a = sqrt 5) and B to zeros.
  LoraLinear(Variable weight, Variable bias, const LoraConfig& config, Generator& gen);

  const AdapterType& type() const override { return lora_adapter_type(); }
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

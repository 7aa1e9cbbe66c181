#include "multilora/lora.h"

#include <cmath>

#include "autograd/functions.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr {

double lora_scaling(double alpha, int64_t r, bool use_rslora) {
  MLR_CHECK(r > 0, "lora: rank must be positive, got {}", r);
  return use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / static_cast<double>(r);
}

Variable lora_update(const Variable& x, const Variable& A, const Variable& B, double scaling) {
  return mul(linear(linear(x, A), B), scaling);
}

LoraLinear::LoraLinear(Variable weight, Variable bias, const LoraConfig& config, Generator& gen)
    : AdaptedLinear(std::move(weight), std::move(bias)),
      config_(config),
      scaling_(lora_scaling(config.alpha, config.r, config.use_rslora)),
      dropout_gen_(config.dropout_seed) {
  MLR_CHECK(config.dropout >= 0.0 && config.dropout < 1.0, "lora: dropout {} is outside [0, 1)", config.dropout);
  if (config.dtype) adapter_dtype_ = *config.dtype;
  TensorOptions opts(adapter_dtype_, weight_.device());
  Tensor a = empty({config.r, in_features()}, opts);
  kaiming_uniform_(a, std::sqrt(5.0), gen);
  lora_A_ = Variable::leaf(a, true, "lora_A.weight");
  lora_B_ = Variable::leaf(zeros({out_features(), config.r}, opts), true, "lora_B.weight");
}

Variable LoraLinear::forward(const Variable& x) {
  Variable base = base_forward(x);
  if (merged_) return base;
  Variable xa = to_dtype(x, lora_A_.dtype());
  if (training_) xa = adapter_dropout(xa, config_.dropout, dropout_gen_);
  return add_update(base, lora_update(xa, lora_A_, lora_B_, scaling_));
}

std::vector<std::pair<std::string, Variable>> LoraLinear::named_tensors() const {
  return {{"lora_A.weight", lora_A_}, {"lora_B.weight", lora_B_}};
}

nlohmann::json LoraLinear::config_json() const {
  return {{"peft_type", "LORA"},
          {"r", config_.r},
          {"lora_alpha", config_.alpha},
          {"lora_dropout", config_.dropout},
          {"use_rslora", config_.use_rslora}};
}

Tensor LoraLinear::delta_weight() const {
  DType acc = weight_.dtype() == DType::f64 ? DType::f64 : DType::f32;
  return mul(matmul(cast(lora_B_.data(), acc), cast(lora_A_.data(), acc)), scaling_);
}

}  // namespace mlr

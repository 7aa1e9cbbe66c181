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
          {"lora_alpha", json_number(config_.alpha)},
          {"lora_dropout", config_.dropout},
          {"use_rslora", config_.use_rslora},
          {"use_dora", false}};
}

Tensor LoraLinear::delta_weight() const {
  DType acc = weight_.dtype() == DType::f64 ? DType::f64 : DType::f32;
  return mul(matmul(cast(lora_B_.data(), acc), cast(lora_A_.data(), acc)), scaling_);
}

const AdapterType& LoraConfig::type() const { return lora_adapter_type(); }

std::unique_ptr<AdaptedLinear> LoraConfig::make_adapter(Variable weight, Variable bias, Generator& init,
                                                        uint64_t seed) const {
  LoraConfig c = *this;
  c.dropout_seed = seed;
  return std::make_unique<LoraLinear>(std::move(weight), std::move(bias), c, init);
}

nlohmann::json LoraConfig::yaml_fields() const { return lora_yaml_fields(*this); }

void read_lora_fields(const nlohmann::json& config, LoraConfig& c) {
  c.r = json_field<int64_t>(config, "r", "a positive integer");
  c.alpha = json_field<double>(config, "lora_alpha", "a number");
  c.dropout = json_field_or<double>(config, "lora_dropout", 0.0, "a number");
  c.use_rslora = json_field_or<bool>(config, "use_rslora", false, "a boolean");
  MLR_CHECK(c.r > 0, "adapter_config.json: r = {} must be positive", c.r);
}

void read_lora_fields(const ConfigFields& section, LoraConfig& c) {
  c.alpha = 16;  // the run configuration's default (the library's is 8, PEFT's)
  section.integer("r", c.r);
  section.number("alpha", c.alpha);
  section.number("dropout", c.dropout);
  section.boolean("rslora", c.use_rslora);
  section.require(c.r > 0, "r", fmt::format("must be positive, got {}", c.r));
  section.require(c.alpha > 0, "alpha", fmt::format("must be positive, got {}", c.alpha));
  section.require(c.dropout >= 0 && c.dropout < 1, "dropout", fmt::format("must be in [0, 1), got {}", c.dropout));
}

nlohmann::json lora_yaml_fields(const LoraConfig& c) {
  return {{"r", c.r}, {"alpha", c.alpha}, {"dropout", c.dropout}, {"rslora", c.use_rslora}};
}

LoraConfig lora_config_from_json(const nlohmann::json& config) {
  MLR_CHECK(&adapter_type_of_file(config) == &lora_adapter_type(),
            "adapter_config.json: peft_type {} (use_dora {}) is not LoRA's (LORA without use_dora)",
            config.at("peft_type").dump(), config.value("use_dora", nlohmann::json(false)).dump());
  LoraConfig c;
  read_lora_fields(config, c);
  return c;
}

const AdapterType& lora_adapter_type() {
  static const AdapterType type{
      .name = "lora",
      .display_name = "LoRA",
      .peft_type = "LORA",
      .reads_file =
          [](const nlohmann::json& config) {
            return json_peft_type_is(config, "LORA") && !json_field_or<bool>(config, "use_dora", false, "a boolean");
          },
      .from_json = [](const nlohmann::json& config) -> std::shared_ptr<const AdapterConfig> {
        return std::make_shared<LoraConfig>(lora_config_from_json(config));
      },
      .yaml_keys = {"r", "alpha", "dropout", "rslora"},
      .from_yaml = [](const ConfigFields& section) -> std::shared_ptr<const AdapterConfig> {
        auto c = std::make_shared<LoraConfig>();
        read_lora_fields(section, *c);
        return c;
      },
      .structural_fields = {"peft_type", "r", "lora_alpha", "use_rslora", "use_dora"},
  };
  return type;
}

}  // namespace mlr

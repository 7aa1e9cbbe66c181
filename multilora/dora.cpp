#include "multilora/dora.h"

#include <cmath>

#include "autograd/functions.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr {
namespace {

DType accumulation_dtype(DType base) { return base == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace

Tensor dora_weight_norm(const Tensor& w0, const Tensor& A, const Tensor& B, double scaling) {
  const DType acc = accumulation_dtype(w0.dtype());
  Tensor v = add(cast(w0, acc), mul(matmul(cast(B, acc), cast(A, acc)), scaling));
  return sqrt(sum(square(v), {1}));
}

Variable dora_update(const Variable& base_term, const Variable& x, const Variable& A, const Variable& B,
                     const Variable& magnitude, const Tensor& norm, double scaling) {
  MLR_CHECK(magnitude.dim() == 1 && norm.dim() == 1 && magnitude.size(0) == norm.size(0) &&
                base_term.size(-1) == magnitude.size(0),
            "dora: magnitude {}, weight norm {} and base term {} must agree on the {} outputs",
            shape_str(magnitude.shape()), shape_str(norm.shape()), shape_str(base_term.shape()), B.size(0));
  Variable factor = div(magnitude, Variable(norm.to(magnitude.device(), magnitude.dtype())));  // m / n
  return add(mul(sub(factor, 1.0), base_term), mul(factor, lora_update(x, A, B, scaling)));
}

DoraLinear::DoraLinear(Variable weight, Variable bias, const LoraConfig& config, Generator& gen,
                       bool awaiting_base_weight)
    : LoraLinear(std::move(weight), std::move(bias), config, gen) {
  // Awaiting: NaN, so that a read past the checks (a collective copying every parameter) spreads
  // no plausible value.
  magnitude_ = Variable::leaf(awaiting_base_weight ? full({out_features()}, std::nan(""), lora_A().data().options())
                                                   : weight_norm().to(lora_A().device(), lora_A().dtype()),
                              true, "lora_magnitude_vector");
  awaits_base_weight_ = awaiting_base_weight;
}

void DoraLinear::compute_from_base_weight() {
  // In place: the optimizer and the model hold this Variable already.
  Tensor m = magnitude_.data();
  m.copy_(weight_norm().to(m.device(), m.dtype()));
}

const Variable& DoraLinear::magnitude() const {
  require_initialised("its magnitude (lora_magnitude_vector)");
  return magnitude_;
}

Tensor DoraLinear::weight_norm() const {
  require_base_weight_values("dora weight norm");
  return dora_weight_norm(weight_.data(), lora_A().data(), lora_B().data(), scaling());
}

Variable DoraLinear::forward(const Variable& x) {
  Variable plain = base_product(x);  // W0 x
  Variable base = bias_.defined() ? add(plain, bias_.detach()) : plain;
  if (merged_) return base;
  const DType dtype = lora_A().dtype();
  Variable xa = to_dtype(x, dtype);
  const bool dropping = training_ && config().dropout > 0;
  Variable xd = dropping ? adapter_dropout(xa, config().dropout, dropout_generator()) : xa;
  // PEFT reuses W0 x for the first term without dropout and recomputes it on x' with dropout.
  Variable base_term = to_dtype(dropping ? base_product(to_dtype(xd, weight_.dtype())) : plain, dtype);
  return add_update(base, dora_update(base_term, xd, lora_A(), lora_B(), magnitude(), weight_norm(), scaling()));
}

std::vector<std::pair<std::string, Variable>> DoraLinear::named_tensors() const {
  auto tensors = LoraLinear::named_tensors();
  tensors.emplace_back("lora_magnitude_vector", magnitude_);
  return tensors;
}

nlohmann::json DoraLinear::config_json() const {
  nlohmann::json c = LoraLinear::config_json();
  c["use_dora"] = true;
  return c;
}

Tensor DoraLinear::merged_weight(const Tensor& w0) {
  const Tensor norm = dora_weight_norm(w0, lora_A().data(), lora_B().data(), scaling());
  merge_factor_ = div(cast(magnitude().data(), w0.dtype()).to(w0.device()), norm);
  return mul(add(w0, LoraLinear::delta_weight()), merge_factor_.unsqueeze(1));
}

Tensor DoraLinear::unmerged_from(const Tensor& merged) const {
  MLR_CHECK(merge_factor_.defined(), "dora: the weight is not merged");
  return sub(div(merged, merge_factor_.unsqueeze(1)), LoraLinear::delta_weight());
}

Tensor DoraLinear::unmerged_weight(const Tensor& merged) {
  Tensor w0 = unmerged_from(merged);
  merge_factor_ = Tensor();
  return w0;
}

Tensor DoraLinear::delta_weight() const {
  require_base_weight_values("dora delta weight");
  Tensor w = cast(weight_.data(), accumulation_dtype(weight_.dtype()));
  if (merged_) return sub(w, unmerged_from(w));
  const Tensor factor = div(cast(magnitude().data(), w.dtype()).to(w.device()), weight_norm());
  return sub(mul(add(w, LoraLinear::delta_weight()), factor.unsqueeze(1)), w);
}

const AdapterType& DoraConfig::type() const { return dora_adapter_type(); }

namespace {

std::unique_ptr<AdaptedLinear> make_dora(const DoraConfig& config, Variable weight, Variable bias, Generator& init,
                                         uint64_t seed, bool awaiting_base_weight) {
  LoraConfig c = config;
  c.dropout_seed = seed;
  return std::make_unique<DoraLinear>(std::move(weight), std::move(bias), c, init, awaiting_base_weight);
}

}  // namespace

std::unique_ptr<AdaptedLinear> DoraConfig::make_adapter(Variable weight, Variable bias, Generator& init,
                                                        uint64_t seed) const {
  return make_dora(*this, std::move(weight), std::move(bias), init, seed, false);
}

std::unique_ptr<AdaptedLinear> DoraConfig::make_adapter_awaiting_base_weight(Variable weight, Variable bias,
                                                                             Generator& init, uint64_t seed) const {
  return make_dora(*this, std::move(weight), std::move(bias), init, seed, true);
}

const AdapterType& dora_adapter_type() {
  static const AdapterType type = [] {
    AdapterType t = lora_adapter_type();  // LoRA's peft_type, YAML keys and structural fields (use_dora among them)
    t.name = "dora";
    t.display_name = "DoRA";
    t.initialises_from_base_weight = true;  // m = ||W0||_row
    t.reads_file = [](const nlohmann::json& config) {
      return json_peft_type_is(config, "LORA") && json_field_or<bool>(config, "use_dora", false, "a boolean");
    };
    t.from_json = [](const nlohmann::json& config) -> std::shared_ptr<const AdapterConfig> {
      auto c = std::make_shared<DoraConfig>();
      read_lora_fields(config, *c);
      return c;
    };
    t.from_yaml = [](const ConfigFields& section) -> std::shared_ptr<const AdapterConfig> {
      auto c = std::make_shared<DoraConfig>();
      read_lora_fields(section, *c);
      return c;
    };
    return t;
  }();
  return type;
}

}  // namespace mlr

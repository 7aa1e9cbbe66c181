#include "multilora/adapter.h"

#include <algorithm>

#include "autograd/functions.h"
#include "autograd/grad_mode.h"
#include "multilora/registry.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace mlr {

DType default_adapter_dtype(DType base_dtype) { return base_dtype == DType::f64 ? DType::f64 : DType::f32; }

Variable adapter_dropout(const Variable& x, double p, Generator& gen) {
  MLR_CHECK(p >= 0.0 && p < 1.0, "adapter dropout: probability {} is outside [0, 1)", p);
  if (p == 0.0) return x;
  Tensor keep = ge(rand(x.shape(), gen, TensorOptions(x.dtype(), x.device())), p);
  Tensor mask = mul(cast(keep, x.dtype()), 1.0 / (1.0 - p));
  return mul(x, Variable(mask));
}

AdaptedLinear::AdaptedLinear(Variable weight, Variable bias)
    : weight_(std::move(weight)), bias_(std::move(bias)), adapter_dtype_(DType::f32) {
  MLR_CHECK(weight_.defined() && weight_.dim() == 2 && weight_.data().is_floating_point(),
            "adapter: the base weight must be a floating-point [out, in] matrix, got {}",
            weight_.defined() ? shape_str(weight_.shape()) + " " + dtype_name(weight_.dtype()) : "undefined");
  if (!bias_.defined()) bias_ = Variable();
  MLR_CHECK(!bias_.defined() || (bias_.dim() == 1 && bias_.size(0) == weight_.size(0)),
            "adapter: bias shape {} does not match the weight's {} outputs", shape_str(bias_.shape()),
            weight_.size(0));
  adapter_dtype_ = default_adapter_dtype(weight_.dtype());
}

std::vector<Variable> AdaptedLinear::parameters() const {
  std::vector<Variable> out;
  for (auto& [name, v] : named_tensors())
    if (v.requires_grad()) out.push_back(v);
  return out;
}

namespace {

void check_input(const Variable& x, int64_t in_features) {
  MLR_CHECK(x.dim() >= 1 && x.size(-1) == in_features, "adapter: input shape {} does not end in {} features",
            shape_str(x.shape()), in_features);
}

}  // namespace

Variable AdaptedLinear::base_forward(const Variable& x) const {
  check_input(x, in_features());
  return linear(x, weight_.detach(), bias_.defined() ? bias_.detach() : Variable());
}

Variable AdaptedLinear::base_product(const Variable& x) const {
  check_input(x, in_features());
  return linear(x, weight_.detach());
}

const Tensor& AdaptedLinear::base_bias() const {
  static const Tensor undefined;
  return bias_.defined() ? bias_.data() : undefined;
}

Variable AdaptedLinear::to_dtype(const Variable& x, DType dtype) { return x.dtype() == dtype ? x : cast(x, dtype); }

Variable AdaptedLinear::add_update(const Variable& base, const Variable& update) const {
  return add(base, update.dtype() == base.dtype() ? update : cast(update, base.dtype()));
}

std::string AdaptedLinear::describe() const {
  if (!module_path_.empty()) return fmt::format("{} adapter '{}'", type().display_name, module_path_);
  return fmt::format("{} adapter on a {} weight", type().display_name, shape_str(weight_.shape()));
}

void AdaptedLinear::require_base_weight_values(const std::string& what) const {
  const Tensor& w = weight_.data();
  const Shape& strides = w.strides();
  const bool broadcast = w.numel() > 1 && std::all_of(strides.begin(), strides.end(), [](int64_t s) { return s == 0; });
  MLR_CHECK(!broadcast, "{}: the base weight {} of the {} holds no values (a sharded base keeps a layer's weights "
            "only while the layer runs, dist/sharded_base.h)", what, shape_str(w.shape()), describe());
}

void AdaptedLinear::require_initialised(const std::string& what) const {
  MLR_CHECK(!awaits_base_weight_, "{}: {} was made awaiting its base weight and has not been initialised from it "
            "(init_from_base_weight) nor loaded from a file", describe(), what);
}

void AdaptedLinear::init_from_base_weight() {
  MLR_CHECK(awaits_base_weight_, "init_from_base_weight: the {} does not await its base weight", describe());
  require_base_weight_values("init_from_base_weight");
  compute_from_base_weight();
  awaits_base_weight_ = false;
}

Tensor AdaptedLinear::merged_weight(const Tensor& w0) { return add(w0, delta_weight()); }

Tensor AdaptedLinear::unmerged_weight(const Tensor& merged) { return sub(merged, delta_weight()); }

void AdaptedLinear::merge() {
  MLR_CHECK(!merged_, "adapter merge: this {} adapter is already merged", type().display_name);
  if (auto reason = merge_unsupported_reason()) throw Error(*reason);
  require_base_weight_values("adapter merge");
  const DType acc = weight_.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor w = weight_.data();
  Tensor merged = merged_weight(cast(w, acc));
  w.copy_(merged);  // one cast into W0's dtype, in W0's own storage
  merged_ = true;
}

void AdaptedLinear::unmerge() {
  MLR_CHECK(merged_, "adapter unmerge: this {} adapter is not merged", type().display_name);
  require_base_weight_values("adapter unmerge");
  const DType acc = weight_.dtype() == DType::f64 ? DType::f64 : DType::f32;
  Tensor w = weight_.data();
  Tensor restored = unmerged_weight(cast(w, acc));
  w.copy_(restored);
  merged_ = false;
}

}  // namespace mlr

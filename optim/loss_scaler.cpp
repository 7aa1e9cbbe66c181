#include "optim/loss_scaler.h"

#include <cmath>

#include "autograd/functions.h"
#include "optim/adamw.h"
#include "optim/kernels/optim_kernels.h"
#include "optim/state.h"
#include "tensor/ops.h"

namespace mlr {
namespace {

void validate(const LossScalerOptions& o, const char* what) {
  MLR_CHECK(std::isfinite(o.init_scale) && o.init_scale > 0, "{}: scale must be positive and finite, got {}", what,
            o.init_scale);
  MLR_CHECK(std::isfinite(o.growth_factor) && o.growth_factor > 1, "{}: growth_factor must be > 1, got {}", what,
            o.growth_factor);
  MLR_CHECK(o.backoff_factor > 0 && o.backoff_factor < 1, "{}: backoff_factor must lie in (0, 1), got {}", what,
            o.backoff_factor);
  MLR_CHECK(o.growth_interval >= 1, "{}: growth_interval must be >= 1, got {}", what, o.growth_interval);
}

// The gradient to unscale in place: a bf16/f16 gradient is replaced by an f32 one first, since
// unscaled, small fp16 gradients would flush to zero in their own dtype.
Tensor unscalable_grad(Variable& param) {
  Tensor g = param.grad();
  if (g.dtype() == DType::f16 || g.dtype() == DType::bf16) {
    g = g.to(DType::f32);
    param.set_grad(g);
  }
  return g;
}

}  // namespace

DynamicLossScaler::DynamicLossScaler(const LossScalerOptions& options) : options_(options), scale_(options.init_scale) {
  validate(options_, "DynamicLossScaler");
}

Variable DynamicLossScaler::scale_loss(const Variable& loss) const {
  if (!enabled()) return loss;
  return mul(loss, scale_);
}

void DynamicLossScaler::unscale_(AdamW& optimizer) {
  if (!enabled()) return;
  MLR_CHECK(!unscaled_, "DynamicLossScaler::unscale_: already called since the last update()");
  MLR_CHECK(!stepped_, "DynamicLossScaler::unscale_: called after step(); call update() first");
  // torch: inv_scale = scale.double().reciprocal().float()
  const double inv_scale = static_cast<double>(static_cast<float>(1.0 / scale_));
  std::vector<Tensor> grads;
  for (Variable& p : optimizer.parameters())
    if (p.grad().defined()) grads.push_back(unscalable_grad(p));
  found_inf_ = !optim_kernels::scale_and_check_finite_multi(grads, inv_scale);
  unscaled_ = true;
}

bool DynamicLossScaler::step(AdamW& optimizer) {
  if (!enabled()) {
    optimizer.step();
    return true;
  }
  MLR_CHECK(!stepped_, "DynamicLossScaler::step: already called since the last update()");
  if (!unscaled_) unscale_(optimizer);
  stepped_ = true;
  if (found_inf_) return false;
  optimizer.step();
  return true;
}

void DynamicLossScaler::update() {
  if (!enabled()) return;
  MLR_CHECK(stepped_, "DynamicLossScaler::update: step() was not called in this iteration");
  if (found_inf_) {
    scale_ *= options_.backoff_factor;
    growth_tracker_ = 0;
  } else if (++growth_tracker_ == options_.growth_interval) {
    scale_ *= options_.growth_factor;
    growth_tracker_ = 0;
  }
  unscaled_ = stepped_ = found_inf_ = false;
}

nlohmann::json DynamicLossScaler::state_dict() const {
  return {{"scale", scale_},
          {"growth_factor", options_.growth_factor},
          {"backoff_factor", options_.backoff_factor},
          {"growth_interval", options_.growth_interval},
          {"growth_tracker", growth_tracker_},
          {"enabled", options_.enabled}};
}

void DynamicLossScaler::load_state_dict(const nlohmann::json& state) {
  const char* what = "loss scaler state";
  LossScalerOptions loaded;
  loaded.init_scale = detail::json_field<double>(state, "scale", what);
  loaded.growth_factor = detail::json_field<double>(state, "growth_factor", what);
  loaded.backoff_factor = detail::json_field<double>(state, "backoff_factor", what);
  loaded.growth_interval = detail::json_field<int64_t>(state, "growth_interval", what);
  loaded.enabled = detail::json_field<bool>(state, "enabled", what);
  validate(loaded, what);
  const auto tracker = detail::json_field<int64_t>(state, "growth_tracker", what);
  MLR_CHECK(tracker >= 0 && tracker < loaded.growth_interval, "{}: growth_tracker {} outside [0, {})", what, tracker,
            loaded.growth_interval);
  MLR_CHECK(loaded.enabled == options_.enabled, "{}: saved by a {} scaler, loaded into a {} one", what,
            loaded.enabled ? "enabled" : "disabled", options_.enabled ? "enabled" : "disabled");
  options_ = loaded;
  scale_ = loaded.init_scale;
  growth_tracker_ = tracker;
  unscaled_ = stepped_ = found_inf_ = false;
}

}  // namespace mlr

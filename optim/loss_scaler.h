// Dynamic loss scaling for fp16 training, with the rules of torch.cuda.amp.GradScaler:
//   - the loss is multiplied by `scale` before backward, so small fp16 gradients do not flush to 0;
//   - before the update the gradients are multiplied by 1/scale (rounded to f32, as torch does)
//     and checked: any inf or NaN means the scale was too large. bf16/f16 gradients are unscaled
//     into f32 gradients that replace them (torch's AMP keeps f32 parameters and gradients; here
//     a low-precision parameter's true gradient would underflow in its own dtype), so clipping
//     and the update read the exact values;
//   - a step with inf/NaN gradients is skipped, and the scale is multiplied by backoff_factor (0.5);
//   - after growth_interval (2000) consecutive clean steps the scale is multiplied by
//     growth_factor (2).
//
//   auto scaled = scaler.scale_loss(loss);  scaled.backward();
//   scaler.unscale_(opt);                  // optional, to clip the true gradients
//   clip_grad_norm_(opt.parameters(), 1.0);
//   bool stepped = scaler.step(opt);       // unscales if not done yet; skips on inf/NaN
//   scaler.update();
//
// A disabled scaler (bf16 or f32 training) has scale 1, never skips and never changes.
#pragma once

#include <cstdint>

#include <nlohmann/json.hpp>

#include "autograd/variable.h"

namespace mlr {

class AdamW;

struct LossScalerOptions {
  double init_scale = 65536.0;  // 2^16
  double growth_factor = 2.0;
  double backoff_factor = 0.5;
  int64_t growth_interval = 2000;
  bool enabled = true;
};

class DynamicLossScaler {
 public:
  explicit DynamicLossScaler(const LossScalerOptions& options = {});

  bool enabled() const { return options_.enabled; }
  double scale() const { return enabled() ? scale_ : 1.0; }
  // Consecutive clean steps since the last growth or backoff.
  int64_t growth_tracker() const { return growth_tracker_; }

  // loss * scale (the loss itself when disabled).
  Variable scale_loss(const Variable& loss) const;
  // Divides the optimizer's gradients by the scale and records whether any was inf/NaN.
  // At most once between two update() calls (a second call throws, as in torch).
  void unscale_(AdamW& optimizer);
  // Unscales (if unscale_ was not called) and steps the optimizer unless an inf/NaN was found.
  // Returns whether the optimizer stepped.
  bool step(AdamW& optimizer);
  // Whether the gradients of this iteration had an inf/NaN (valid after unscale_ or step).
  bool found_inf() const { return found_inf_; }
  // Adjusts the scale from this iteration's result (backoff on inf/NaN, growth after a clean
  // interval) and clears the iteration's flags. Must follow step().
  void update();

  // {"scale", "growth_factor", "backoff_factor", "growth_interval", "growth_tracker", "enabled"}
  // (torch's GradScaler.state_dict fields).
  nlohmann::json state_dict() const;
  void load_state_dict(const nlohmann::json& state);

 private:
  LossScalerOptions options_;
  double scale_;
  int64_t growth_tracker_ = 0;
  bool unscaled_ = false;  // unscale_ ran this iteration
  bool stepped_ = false;   // step ran this iteration
  bool found_inf_ = false;
};

}  // namespace mlr

// Gradient utilities for the training loop: global norm, clipping, zeroing, scaling, and the
// bookkeeping of gradient accumulation. Parameters without a gradient (never reached by backward,
// or zeroed with set_to_none) are skipped everywhere, as in torch.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/variable.h"

namespace mlr {

// sqrt(sum over every parameter's gradient of g^2): each element is squared and summed in double
// (on the CPU; in f32 per tensor on other devices), whatever the gradient dtype. inf or NaN in any
// gradient gives a non-finite result.
double global_grad_norm(const std::vector<Variable>& params);

// Scales every gradient so that the global norm is at most max_norm, as
// torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied only when coef < 1.
// Returns the norm before clipping. A non-finite norm leaves the gradients untouched (the caller,
// or the loss scaler, skips the step); max_norm must be positive.
double clip_grad_norm_(const std::vector<Variable>& params, double max_norm);

// Whether every element of every gradient is finite.
bool grads_are_finite(const std::vector<Variable>& params);

// g *= factor for every gradient, in place, in the gradient's dtype.
void scale_grads_(const std::vector<Variable>& params, double factor);

// Zeroes every gradient: drops it (set_to_none, the default, as torch >= 2.0) or fills it with 0.
void zero_grad(const std::vector<Variable>& params, bool set_to_none = true);

// Gradient accumulation over `micro_batches` backward passes per optimizer step. Gradients of the
// micro-batches are *averaged*: each micro-batch loss is multiplied by 1 / micro_batches before its
// backward (transformers' Trainer convention), so with equal micro-batches the accumulated
// gradient equals that of one large batch with a mean loss. Losses that are already sums over a
// step's tokens (normalised by the step's total token count) should be left unscaled instead:
// call backward on them directly and only use the counting.
//
//   GradAccumulator acc(4);
//   for (batch : loader) {
//     acc.scale_loss(loss(batch)).backward();
//     if (acc.micro_batch_done()) { clip; optimizer.step(); zero_grad(params); }
//   }
class GradAccumulator {
 public:
  explicit GradAccumulator(int64_t micro_batches);
  int64_t micro_batches() const { return micro_batches_; }
  // Micro-batches already accumulated towards the next optimizer step, in [0, micro_batches).
  int64_t position() const { return position_; }
  // loss * (1 / micro_batches).
  Variable scale_loss(const Variable& loss) const;
  // Counts one micro-batch; true when it completes an optimizer step (the count restarts).
  bool micro_batch_done();

  nlohmann::json state_dict() const;
  // Restores the position; the saved micro_batches must equal this accumulator's.
  void load_state_dict(const nlohmann::json& state);

 private:
  int64_t micro_batches_;
  int64_t position_ = 0;
};

}  // namespace mlr

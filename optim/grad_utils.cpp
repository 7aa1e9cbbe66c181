#include "optim/grad_utils.h"

#include <cmath>

#include "autograd/functions.h"
#include "optim/kernels/optim_kernels.h"
#include "optim/state.h"
#include "tensor/ops.h"

namespace mlr {

double global_grad_norm(const std::vector<Variable>& params) {
  std::vector<const Tensor*> grads;
  for (const Variable& p : params)
    if (p.defined() && p.grad().defined()) grads.push_back(&p.grad());
  return std::sqrt(optim_kernels::sum_of_squares_multi(grads));
}

double clip_grad_norm_(const std::vector<Variable>& params, double max_norm) {
  MLR_CHECK(std::isfinite(max_norm) && max_norm > 0, "clip_grad_norm_: max_norm must be positive, got {}",
            max_norm);
  const double norm = global_grad_norm(params);
  if (!std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) scale_grads_(params, coef);
  return norm;
}

bool grads_are_finite(const std::vector<Variable>& params) {
  for (const Variable& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    const Tensor& g = p.grad();
    if (!optim_kernels::all_finite(g)) return false;
  }
  return true;
}

void scale_grads_(const std::vector<Variable>& params, double factor) {
  for (const Variable& p : params) {
    if (!p.defined() || !p.grad().defined()) continue;
    Tensor g = p.grad();
    mul_(g, factor);
  }
}

void zero_grad(const std::vector<Variable>& params, bool set_to_none) {
  for (const Variable& p : params) {
    Variable handle = p;  // a handle onto the same variable
    if (handle.defined()) handle.zero_grad(set_to_none);
  }
}

GradAccumulator::GradAccumulator(int64_t micro_batches) : micro_batches_(micro_batches) {
  MLR_CHECK(micro_batches >= 1, "GradAccumulator: micro_batches must be >= 1, got {}", micro_batches);
}

Variable GradAccumulator::scale_loss(const Variable& loss) const {
  if (micro_batches_ == 1) return loss;
  return mul(loss, 1.0 / static_cast<double>(micro_batches_));
}

bool GradAccumulator::micro_batch_done() {
  position_ += 1;
  if (position_ < micro_batches_) return false;
  position_ = 0;
  return true;
}

nlohmann::json GradAccumulator::state_dict() const {
  return {{"micro_batches", micro_batches_}, {"position", position_}};
}

void GradAccumulator::load_state_dict(const nlohmann::json& state) {
  const char* what = "gradient accumulation state";
  const auto micro_batches = detail::json_field<int64_t>(state, "micro_batches", what);
  const auto position = detail::json_field<int64_t>(state, "position", what);
  MLR_CHECK(micro_batches == micro_batches_,
            "{}: saved with {} micro-batches per step, this run uses {}", what, micro_batches, micro_batches_);
  MLR_CHECK(position >= 0 && position < micro_batches, "{}: position {} outside [0, {})", what, position,
            micro_batches);
  position_ = position;
}

}  // namespace mlr

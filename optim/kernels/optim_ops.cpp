// The optimizer kernels composed of tensor ops, for devices without a dedicated kernel, and the
// device dispatch. The math is stated once in optim_kernels.h.
#include <cmath>

#include "optim/kernels/optim_kernels.h"
#include "tensor/ops.h"

namespace mlr::optim_kernels {

void adamw_update_ops(Tensor& master, Tensor& exp_avg, Tensor& exp_avg_sq, const Tensor& grad,
                      const AdamWScalars& s) {
  MLR_CHECK(master.dtype() == DType::f32 || master.dtype() == DType::f64,
            "adamw_update_ops: master weights must be f32 or f64, got {}", dtype_name(master.dtype()));
  MLR_CHECK(exp_avg.shape() == master.shape() && exp_avg_sq.shape() == master.shape() &&
                grad.shape() == master.shape(),
            "adamw_update_ops: shapes differ: master {}, exp_avg {}, exp_avg_sq {}, grad {}",
            shape_str(master.shape()), shape_str(exp_avg.shape()), shape_str(exp_avg_sq.shape()),
            shape_str(grad.shape()));
  const Tensor g = grad.to(master.device(), master.dtype());
  if (s.weight_decay != 0.0) mul_(master, 1.0 - s.lr * s.weight_decay);
  const double w1 = 1.0 - s.beta1;
  const Tensor diff = sub(g, exp_avg);
  if (std::abs(w1) < 0.5) {
    add_(exp_avg, mul(diff, w1));
  } else {
    exp_avg.copy_(sub(g, mul(diff, 1.0 - w1)));
  }
  mul_(exp_avg_sq, s.beta2);
  add_(exp_avg_sq, mul(mul(g, 1.0 - s.beta2), g));
  const double bias_correction1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
  const double bias_correction2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
  const Tensor denom = add(div(sqrt(exp_avg_sq), std::pow(bias_correction2, 0.5)), s.eps);
  add_(master, div(mul(exp_avg, -(s.lr / bias_correction1)), denom));
}

double sum_of_squares_ops(const Tensor& t) {
  const DType acc = t.device().is_cpu() ? DType::f64 : DType::f32;
  return sum(square(t.to(acc))).item<double>();
}

bool all_finite_ops(const Tensor& t) { return sum(logical_not(isfinite(t)).to(DType::i64)).item<int64_t>() == 0; }

bool scale_and_check_finite_ops(Tensor& t, double factor) {
  const bool finite = all_finite_ops(t);
  mul_(t, factor);
  return finite;
}

void adamw_update(Tensor& master, Tensor& exp_avg, Tensor& exp_avg_sq, const Tensor& grad,
                  const AdamWScalars& scalars) {
  if (master.device().is_cpu()) {
    adamw_update_cpu(master, exp_avg, exp_avg_sq, grad, scalars);
  } else {
    adamw_update_ops(master, exp_avg, exp_avg_sq, grad, scalars);
  }
}

double sum_of_squares(const Tensor& t) { return t.device().is_cpu() ? sum_of_squares_cpu(t) : sum_of_squares_ops(t); }

bool all_finite(const Tensor& t) { return t.device().is_cpu() ? all_finite_cpu(t) : all_finite_ops(t); }

bool scale_and_check_finite(Tensor& t, double factor) {
  return t.device().is_cpu() && t.is_contiguous() ? scale_and_check_finite_cpu(t, factor)
                                                  : scale_and_check_finite_ops(t, factor);
}

}  // namespace mlr::optim_kernels

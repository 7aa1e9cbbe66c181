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

namespace {

// Whether `t` goes to the multi-tensor CUDA kernels together with `first` (the first such tensor,
// or null): a CUDA tensor of a dtype they read, on first's device.
bool in_cuda_multi(const Tensor& t, const Tensor* first) {
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
  const DType d = t.dtype();
  return t.device().is_cuda() && (d == DType::f32 || d == DType::bf16 || d == DType::f16) &&
         (!first || first->device() == t.device());
#else
  (void)t;
  (void)first;
  return false;
#endif
}

double sum_of_squares_cuda_multi_or_zero(const std::vector<const Tensor*>& on_cuda) {
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
  if (!on_cuda.empty()) return sum_of_squares_multi_cuda(on_cuda);
#endif
  (void)on_cuda;
  return 0.0;
}

}  // namespace

double sum_of_squares_multi(const std::vector<const Tensor*>& tensors) {
  std::vector<const Tensor*> on_cuda;
  double total = 0;
  for (const Tensor* t : tensors) {
    if (in_cuda_multi(*t, on_cuda.empty() ? nullptr : on_cuda.front())) on_cuda.push_back(t);
    else total += sum_of_squares(*t);
  }
  return total + sum_of_squares_cuda_multi_or_zero(on_cuda);
}

bool scale_and_check_finite_multi(std::vector<Tensor>& tensors, double factor) {
  bool finite = true;
  std::vector<const Tensor*> on_cuda;
  for (Tensor& t : tensors) {
    if (in_cuda_multi(t, on_cuda.empty() ? nullptr : on_cuda.front())) on_cuda.push_back(&t);
    else finite = scale_and_check_finite(t, factor) && finite;
  }
  if (on_cuda.empty()) return finite;
  finite = std::isfinite(sum_of_squares_cuda_multi_or_zero(on_cuda)) && finite;
  for (const Tensor* t : on_cuda) {
    Tensor scaled = *t;
    mul_(scaled, factor);
  }
  return finite;
}

bool all_finite(const Tensor& t) { return t.device().is_cpu() ? all_finite_cpu(t) : all_finite_ops(t); }

bool scale_and_check_finite(Tensor& t, double factor) {
  return t.device().is_cpu() && t.is_contiguous() ? scale_and_check_finite_cpu(t, factor)
                                                  : scale_and_check_finite_ops(t, factor);
}

}  // namespace mlr::optim_kernels

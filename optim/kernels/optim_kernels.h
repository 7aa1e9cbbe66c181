// Elementwise kernels of the optimizer, one function per pass over a parameter's memory.
// The CPU versions (kernels/cpu/optim_kernels.cpp) are plain loops: the readable reference that
// the fused multi-tensor CUDA kernels (kernels/cuda/: the AdamW update of every parameter, the sum
// of squares of every gradient) are tested against. The *_ops versions (kernels/optim_ops.cpp)
// are the same math composed of tensor ops, for devices and dtypes without a dedicated kernel:
// correct wherever those ops run, but one pass (and temporaries) per op, and each result read on
// the host (one synchronisation per tensor).
// The unsuffixed functions at the end dispatch on the device.
#pragma once

#include <vector>

#include <cstdint>

#include "tensor/tensor.h"

namespace mlr::optim_kernels {

// Hyperparameters of one AdamW update (the scalars of torch.optim.AdamW, amsgrad off).
struct AdamWScalars {
  double lr = 0;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
  int64_t step = 1;  // 1-based count of updates of this parameter, including this one
};

// One AdamW update, in place, of the master weights `master` and the moments m = exp_avg,
// v = exp_avg_sq, given the gradient g (any floating dtype; read in the master's precision).
// The arithmetic follows torch.optim.AdamW's single-tensor path, op by op, in the master's dtype
// (f32, or f64), with the scalars formed in double as Python does and then rounded to that dtype:
//   p  = p * (1 - lr * wd)                        (skipped when wd == 0)
//   m  = lerp(m, g, w),  w = 1 - beta1            (fma(w, g - m, m), or fma(w - 1, g - m, g) for w >= 0.5)
//   v  = fma((1 - beta2) * g, g, v * beta2)
//   bc1 = 1 - beta1^step,  bc2 = 1 - beta2^step
//   p  = p + ((-lr / bc1) * m) / (sqrt(v) / sqrt(bc2) + eps)
// The fused multiply-adds are where torch's vectorised CPU kernels (lerp, addcmul) round once;
// with them the f32 trajectories of tests/fixtures/optim match torch bit for bit except where
// torch's vectorised sqrt is off by an ulp (ours is correctly rounded).
// master, exp_avg and exp_avg_sq are contiguous, of one dtype (f32 or f64) and of g's numel.
void adamw_update_cpu(Tensor& master, Tensor& exp_avg, Tensor& exp_avg_sq, const Tensor& grad,
                      const AdamWScalars& scalars);

// Sum of squares of the elements of `t` (any floating dtype, any strides), accumulated in double.
double sum_of_squares_cpu(const Tensor& t);

// Whether every element of `t` (any floating dtype, any strides) is finite.
bool all_finite_cpu(const Tensor& t);

// t *= factor in place (any floating dtype, contiguous), computing in t's compute precision.
// Returns whether every element of t was finite before scaling (the check GradScaler makes).
bool scale_and_check_finite_cpu(Tensor& t, double factor);

// ---- the same through tensor ops (any device), rounding after each op (no fused multiply-add):
// adamw_update_ops agrees with adamw_update_cpu within a few ulps, the others exactly up to the
// order of summation.
void adamw_update_ops(Tensor& master, Tensor& exp_avg, Tensor& exp_avg_sq, const Tensor& grad,
                      const AdamWScalars& scalars);
double sum_of_squares_ops(const Tensor& t);  // in f32 per tensor off the CPU (no f64 there), f64 on it
bool all_finite_ops(const Tensor& t);
bool scale_and_check_finite_ops(Tensor& t, double factor);

// ---- the fused multi-tensor CUDA update (kernels/cuda/adamw_multi.cu; CUDA builds only) ----
// One launch for every parameter of a step. master, exp_avg, exp_avg_sq f32 and contiguous; grad
// f32/bf16/f16; param_out (optional) the bf16/f16 parameter that receives the rounded master.
struct AdamWWork {
  Tensor* master;
  Tensor* exp_avg;
  Tensor* exp_avg_sq;
  const Tensor* grad;
  Tensor* param_out;  // null when the master is the parameter itself
  AdamWScalars scalars;
};
void adamw_update_multi_cuda(const std::vector<AdamWWork>& work);
// Sum of squares of all the tensors together (f32, bf16 or f16, on one CUDA device), accumulated in
// double in a fixed order: one pass, one copy of the result to the host.
double sum_of_squares_multi_cuda(const std::vector<const Tensor*>& tensors);

// ---- dispatch: the CPU loops for CPU tensors, the tensor-op versions elsewhere ----
void adamw_update(Tensor& master, Tensor& exp_avg, Tensor& exp_avg_sq, const Tensor& grad, const AdamWScalars& scalars);
double sum_of_squares(const Tensor& t);
// The sum of squares over all `tensors` (the square of the global gradient norm): on the CPU the
// per-tensor loops, on CUDA the multi-tensor reduction (one synchronisation for the whole list).
double sum_of_squares_multi(const std::vector<const Tensor*>& tensors);
bool all_finite(const Tensor& t);
bool scale_and_check_finite(Tensor& t, double factor);
// Every tensor *= factor; returns whether all were finite before. On the CPU the fused loop per
// tensor; on CUDA one multi-tensor sum of squares answers for all of them (finite exactly when
// every element is: squares of f32 values summed in double cannot overflow), one synchronisation.
bool scale_and_check_finite_multi(std::vector<Tensor>& tensors, double factor);

}  // namespace mlr::optim_kernels

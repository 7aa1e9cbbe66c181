// RMSNorm over the last dimension (size d), per row x:
//   r = rsqrt(mean(x^2) + eps),  y = x * r * w
// Backward, given dy:
//   dx = r * (dy*w - x * r^2 * mean(dy*w*x))
//   dw = sum over rows of dy * x * r        (skipped when the weight is frozen)
// Forward saves r (one per row) so backward never recomputes the reduction.
// Reference loops: one row per OpenMP iteration; accumulation in f32 (f64 for f64), so r and the
// statistics are f32 (f64 for f64 inputs); outputs are rounded once. All tensors contiguous.
#include <omp.h>

#include <cmath>
#include <initializer_list>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {
}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y, const Tensor& rstd) {
  check_kernel_contiguous("rmsnorm_forward", "cpu", {&x, &weight, &y, &rstd});
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  visit_floating(x.dtype(), "rmsnorm_forward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* px = x.data<T>();
    const T* pw = weight.data<T>();
    T* py = y.data<T>();
    Acc* pr = rstd.data<Acc>();
#pragma omp parallel for schedule(static) if (rows * d >= 16384)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * d;
      T* yr = py + r * d;
      Acc sumsq = 0;
      for (int64_t j = 0; j < d; ++j) sumsq += static_cast<Acc>(xr[j]) * static_cast<Acc>(xr[j]);
      const Acc rs = Acc(1) / std::sqrt(sumsq / static_cast<Acc>(d) + static_cast<Acc>(eps));
      pr[r] = rs;
      for (int64_t j = 0; j < d; ++j) yr[j] = static_cast<T>(static_cast<Acc>(xr[j]) * rs * static_cast<Acc>(pw[j]));
    }
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dx,
                      const Tensor* dweight) {
  check_kernel_contiguous("rmsnorm_backward", "cpu", {&dy, &x, &weight, &rstd, &dx});
  if (dweight) check_kernel_contiguous("rmsnorm_backward", "cpu", {dweight});
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  visit_floating(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* pdy = dy.data<T>();
    const T* px = x.data<T>();
    const T* pw = weight.data<T>();
    const Acc* pr = rstd.data<Acc>();
    T* pdx = dx.data<T>();
#pragma omp parallel for schedule(static) if (rows * d >= 16384)
    for (int64_t r = 0; r < rows; ++r) {
      const T* dyr = pdy + r * d;
      const T* xr = px + r * d;
      T* dxr = pdx + r * d;
      const Acc rs = pr[r];
      Acc dot = 0;  // sum over the row of dy*w*x
      for (int64_t j = 0; j < d; ++j)
        dot += static_cast<Acc>(dyr[j]) * static_cast<Acc>(pw[j]) * static_cast<Acc>(xr[j]);
      const Acc c = rs * rs * dot / static_cast<Acc>(d);
      for (int64_t j = 0; j < d; ++j)
        dxr[j] = static_cast<T>(rs * (static_cast<Acc>(dyr[j]) * static_cast<Acc>(pw[j]) - static_cast<Acc>(xr[j]) * c));
    }
    if (dweight == nullptr) return;
    // dw: each thread owns a range of columns and sums them over all rows in row order, so the
    // result does not depend on the number of threads.
    T* pdw = dweight->data<T>();
#pragma omp parallel if (rows * d >= 16384)
    {
      const int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t j0 = d * t / nt, j1 = d * (t + 1) / nt;
      std::vector<Acc> acc(static_cast<size_t>(j1 - j0), Acc(0));
      for (int64_t r = 0; r < rows; ++r) {
        const Acc rs = pr[r];
        for (int64_t j = j0; j < j1; ++j)
          acc[j - j0] += static_cast<Acc>(pdy[r * d + j]) * static_cast<Acc>(px[r * d + j]) * rs;
      }
      for (int64_t j = j0; j < j1; ++j) pdw[j] = static_cast<T>(acc[j - j0]);
    }
  });
}

}  // namespace mlr::cpu

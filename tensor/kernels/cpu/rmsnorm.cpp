// RMSNorm over the last dimension (size d), per row x:
//   r = rsqrt(mean(x^2) + eps),  y = x * r * w
// Backward, given dy:
//   dx = r * (dy*w - x * r^2 * mean(dy*w*x))
//   dw = sum over rows of dy * x * r        (skipped when the weight is frozen)
// Forward saves r (one per row) so backward never recomputes the reduction.
// Rows split over OpenMP threads; each row's loops are vector loops (simd.h) at the CPU's widest
// level. Accumulation in f32 (f64 for f64), so r and the statistics are f32 (f64 for f64
// inputs); outputs are rounded once. All tensors contiguous.
#include <omp.h>

#include <cmath>
#include <initializer_list>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {

template <typename T>
struct ForwardRows {
  using A = compute_t<T>;
  const T *x, *w;
  T* y;
  A* rstd;
  int64_t d;
  A eps;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* xr = x + r * d;
      T* yr = y + r * d;
      A sumsq = 0;
#pragma omp simd reduction(+ : sumsq)
      for (int64_t j = 0; j < d; ++j) {
        const A v = to_compute(xr[j]);
        sumsq += v * v;
      }
      const A rs = A(1) / std::sqrt(sumsq / static_cast<A>(d) + eps);
      rstd[r] = rs;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) yr[j] = from_compute<T>(to_compute(xr[j]) * rs * to_compute(w[j]));
    }
  }
};

template <typename T>
struct BackwardRows {
  using A = compute_t<T>;
  const T *dy, *x, *w;
  const A* rstd;
  T* dx;
  int64_t d;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const T* dyr = dy + r * d;
      const T* xr = x + r * d;
      T* dxr = dx + r * d;
      const A rs = rstd[r];
      A dot = 0;  // sum over the row of dy*w*x
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < d; ++j) dot += to_compute(dyr[j]) * to_compute(w[j]) * to_compute(xr[j]);
      const A c = rs * rs * dot / static_cast<A>(d);
#pragma omp simd
      for (int64_t j = 0; j < d; ++j)
        dxr[j] = from_compute<T>(rs * (to_compute(dyr[j]) * to_compute(w[j]) - to_compute(xr[j]) * c));
    }
  }
};

// dw over a range of columns: each column summed over all rows in row order, so the result does
// not depend on how columns are split between threads.
template <typename T>
struct WeightColumns {
  using A = compute_t<T>;
  const T *dy, *x;
  const A* rstd;
  T* dw;
  int64_t rows_, d;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t j0, int64_t j1) {
    std::vector<A> acc(static_cast<size_t>(j1 - j0), A(0));
    A* pa = acc.data() - j0;
    for (int64_t r = 0; r < rows_; ++r) {
      const A rs = rstd[r];
      const T* dyr = dy + r * d;
      const T* xr = x + r * d;
#pragma omp simd
      for (int64_t j = j0; j < j1; ++j) pa[j] += to_compute(dyr[j]) * to_compute(xr[j]) * rs;
    }
    for (int64_t j = j0; j < j1; ++j) dw[j] = from_compute<T>(pa[j]);
  }
};

}  // namespace

void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y, const Tensor& rstd) {
  check_kernel_contiguous("rmsnorm_forward", "cpu", {&x, &weight, &y, &rstd});
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  visit_floating(x.dtype(), "rmsnorm_forward", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    ForwardRows<T> f{x.data<T>(), weight.data<T>(), y.data<T>(), rstd.data<A>(), d, static_cast<A>(eps)};
    parallel_rows(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), f);
  });
}

void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd, const Tensor& dx,
                      const Tensor* dweight) {
  check_kernel_contiguous("rmsnorm_backward", "cpu", {&dy, &x, &weight, &rstd, &dx});
  if (dweight) check_kernel_contiguous("rmsnorm_backward", "cpu", {dweight});
  const int64_t d = x.size(-1), rows = d == 0 ? 0 : x.numel() / d;
  visit_floating(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    BackwardRows<T> f{dy.data<T>(), x.data<T>(), weight.data<T>(), rstd.data<A>(), dx.data<T>(), d};
    parallel_rows(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(d, 1)), f);
    if (dweight == nullptr) return;
    WeightColumns<T> w{dy.data<T>(), x.data<T>(), rstd.data<A>(), dweight->data<T>(), rows, d};
    parallel_rows(d, rows * d >= 16384 ? 64 : d, w);
  });
}

}  // namespace mlr::cpu

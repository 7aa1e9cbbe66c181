// Softmax cross-entropy over the last dimension, logits [N, V], targets t [N]:
//   lse_i = log sum_j exp(logits_ij),  loss_i = lse_i - logits[i, t_i]   (0 when t_i == ignore_index)
// Backward, given per-row upstream gradients g_i and the saved lse:
//   dlogits_ij = g_i * (exp(logits_ij - lse_i) - [j == t_i])             (0 rows when ignored)
// Rows split over OpenMP threads, each row's passes vector loops (simd.h; fast_exp in f32); math in
// f32 (f64 for f64), so losses and lse are f32 (f64 for f64 logits). Targets were range-checked by
// the front-end. All tensors contiguous.
#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {

template <typename T>
struct ForwardRows {
  using A = compute_t<T>;
  const T* logits;
  const int64_t* targets;
  int64_t vocab, ignore_index;
  A *losses, *lse;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* x = logits + i * vocab;
      A m = -std::numeric_limits<A>::infinity();
#pragma omp simd reduction(max : m)
      for (int64_t j = 0; j < vocab; ++j) m = std::max(m, to_compute(x[j]));
      A sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < vocab; ++j) sum += exp_of(to_compute(x[j]) - m);
      const A l = m + std::log(sum);
      lse[i] = l;
      losses[i] = targets[i] == ignore_index ? A(0) : l - to_compute(x[targets[i]]);
    }
  }
};

template <typename T>
struct BackwardRows {
  using A = compute_t<T>;
  const T* logits;
  const int64_t* targets;
  int64_t vocab, ignore_index;
  const A *dlosses, *lse;
  T* dlogits;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T* x = logits + i * vocab;
      T* dx = dlogits + i * vocab;
      if (targets[i] == ignore_index) {
        for (int64_t j = 0; j < vocab; ++j) dx[j] = from_compute<T>(A(0));
        continue;
      }
      const A g = dlosses[i], l = lse[i];
#pragma omp simd
      for (int64_t j = 0; j < vocab; ++j) dx[j] = from_compute<T>(g * exp_of(to_compute(x[j]) - l));
      dx[targets[i]] = from_compute<T>(g * (exp_of(to_compute(x[targets[i]]) - l) - A(1)));
    }
  }
};

}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& losses,
                           const Tensor& lse) {
  check_kernel_contiguous("cross_entropy_forward", "cpu", {&logits, &losses, &lse});
  const int64_t n = logits.size(0), vocab = logits.size(1);
  const std::vector<int64_t> t = targets.to_vector<int64_t>();
  visit_floating(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    ForwardRows<T> f{logits.data<T>(), t.data(), vocab, ignore_index, losses.data<A>(), lse.data<A>()};
    parallel_rows(n, std::max<int64_t>(1, 16384 / std::max<int64_t>(vocab, 1)), f);
  });
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& targets, const Tensor& lse, int64_t ignore_index) {
  check_kernel_contiguous("cross_entropy_backward", "cpu", {&dlogits, &dlosses, &logits, &lse});
  const int64_t n = logits.size(0), vocab = logits.size(1);
  const std::vector<int64_t> t = targets.to_vector<int64_t>();
  visit_floating(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    BackwardRows<T> f{logits.data<T>(), t.data(), vocab, ignore_index, dlosses.data<A>(), lse.data<A>(),
                      dlogits.data<T>()};
    parallel_rows(n, std::max<int64_t>(1, 16384 / std::max<int64_t>(vocab, 1)), f);
  });
}

}  // namespace mlr::cpu

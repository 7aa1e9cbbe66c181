// Softmax cross-entropy over the last dimension, logits [N, V], targets t [N]:
//   lse_i = log sum_j exp(logits_ij),  loss_i = lse_i - logits[i, t_i]   (0 when t_i == ignore_index)
// Backward, given per-row upstream gradients g_i and the saved lse:
//   dlogits_ij = g_i * (exp(logits_ij - lse_i) - [j == t_i])             (0 rows when ignored)
// One row per OpenMP iteration; math in f32 (f64 for f64), so losses and lse are f32 (f64 for f64
// logits). Targets were range-checked by the front-end. All tensors contiguous.
#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {
}  // namespace

void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& losses,
                           const Tensor& lse) {
  check_kernel_contiguous("cross_entropy_forward", "cpu", {&logits, &losses, &lse});
  const int64_t n = logits.size(0), vocab = logits.size(1);
  const std::vector<int64_t> t = targets.to_vector<int64_t>();
  visit_floating(logits.dtype(), "cross_entropy_forward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* px = logits.data<T>();
    Acc* ploss = losses.data<Acc>();
    Acc* plse = lse.data<Acc>();
#pragma omp parallel for schedule(static) if (n * vocab >= 16384)
    for (int64_t i = 0; i < n; ++i) {
      const T* x = px + i * vocab;
      Acc m = -std::numeric_limits<Acc>::infinity();
      for (int64_t j = 0; j < vocab; ++j) m = std::max(m, static_cast<Acc>(x[j]));
      Acc sum = 0;
      for (int64_t j = 0; j < vocab; ++j) sum += std::exp(static_cast<Acc>(x[j]) - m);
      const Acc l = m + std::log(sum);
      plse[i] = l;
      ploss[i] = t[i] == ignore_index ? Acc(0) : l - static_cast<Acc>(x[t[i]]);
    }
  });
}

void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& targets, const Tensor& lse, int64_t ignore_index) {
  check_kernel_contiguous("cross_entropy_backward", "cpu", {&dlogits, &dlosses, &logits, &lse});
  const int64_t n = logits.size(0), vocab = logits.size(1);
  const std::vector<int64_t> t = targets.to_vector<int64_t>();
  visit_floating(logits.dtype(), "cross_entropy_backward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* px = logits.data<T>();
    const Acc* pg = dlosses.data<Acc>();
    const Acc* plse = lse.data<Acc>();
    T* pdx = dlogits.data<T>();
#pragma omp parallel for schedule(static) if (n * vocab >= 16384)
    for (int64_t i = 0; i < n; ++i) {
      const T* x = px + i * vocab;
      T* dx = pdx + i * vocab;
      if (t[i] == ignore_index) {
        for (int64_t j = 0; j < vocab; ++j) dx[j] = static_cast<T>(Acc(0));
        continue;
      }
      const Acc g = pg[i], l = plse[i];
      for (int64_t j = 0; j < vocab; ++j)
        dx[j] = static_cast<T>(g * (std::exp(static_cast<Acc>(x[j]) - l) - (j == t[i] ? Acc(1) : Acc(0))));
    }
  });
}

}  // namespace mlr::cpu

// SwiGLU, elementwise on gate and up (same shape):
//   s = sigmoid(gate),  h = gate * s * up                       (silu(gate) * up)
// Backward, given dh:
//   dgate = dh * up * s * (1 + gate * (1 - s)),  dup = dh * gate * s
// All tensors contiguous; math in f32 (f64 for f64), rounded once. Vector loops (simd.h); in f32
// the exponential is fast_exp (2 ulp), so sigmoid(-x) for large x is exactly 0 as in the
// reference.
#include <cmath>
#include <initializer_list>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {

template <typename A>
MLR_ALWAYS_INLINE A sigmoid(A x) {
  return A(1) / (A(1) + exp_of(-x));
}

template <typename T>
struct Forward {
  using A = compute_t<T>;
  const T *gate, *up;
  T* h;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const A g = to_compute(gate[i]);
      h[i] = from_compute<T>(g * sigmoid(g) * to_compute(up[i]));
    }
  }
};

template <typename T>
struct Backward {
  using A = compute_t<T>;
  const T *dh, *gate, *up;
  T *dgate, *dup;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const A g = to_compute(gate[i]), u = to_compute(up[i]), d = to_compute(dh[i]);
      const A s = sigmoid(g);
      dgate[i] = from_compute<T>(d * u * s * (A(1) + g * (A(1) - s)));
      dup[i] = from_compute<T>(d * g * s);
    }
  }
};

}  // namespace

void swiglu_forward(const Tensor& h, const Tensor& gate, const Tensor& up) {
  check_kernel_contiguous("swiglu_forward", "cpu", {&h, &gate, &up});
  visit_floating(gate.dtype(), "swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    Forward<T> f{gate.data<T>(), up.data<T>(), h.data<T>()};
    parallel_rows(gate.numel(), 32768, f);
  });
}

void swiglu_backward(const Tensor& dh, const Tensor& gate, const Tensor& up, const Tensor& dgate, const Tensor& dup) {
  check_kernel_contiguous("swiglu_backward", "cpu", {&dh, &gate, &up, &dgate, &dup});
  visit_floating(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    Backward<T> f{dh.data<T>(), gate.data<T>(), up.data<T>(), dgate.data<T>(), dup.data<T>()};
    parallel_rows(gate.numel(), 32768, f);
  });
}

}  // namespace mlr::cpu

// SwiGLU, elementwise on gate and up (same shape):
//   s = sigmoid(gate),  h = gate * s * up                       (silu(gate) * up)
// Backward, given dh:
//   dgate = dh * up * s * (1 + gate * (1 - s)),  dup = dh * gate * s
// All tensors contiguous; math in f32 (f64 for f64), rounded once.
#include <cmath>
#include <initializer_list>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {
template <typename Acc>
inline Acc sigmoid(Acc x) {
  return Acc(1) / (Acc(1) + std::exp(-x));
}
}  // namespace

void swiglu_forward(const Tensor& h, const Tensor& gate, const Tensor& up) {
  check_kernel_contiguous("swiglu_forward", "cpu", {&h, &gate, &up});
  const int64_t n = gate.numel();
  visit_floating(gate.dtype(), "swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    T* ph = h.data<T>();
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t i = 0; i < n; ++i) {
      const Acc g = static_cast<Acc>(pg[i]);
      ph[i] = static_cast<T>(g * sigmoid(g) * static_cast<Acc>(pu[i]));
    }
  });
}

void swiglu_backward(const Tensor& dh, const Tensor& gate, const Tensor& up, const Tensor& dgate, const Tensor& dup) {
  check_kernel_contiguous("swiglu_backward", "cpu", {&dh, &gate, &up, &dgate, &dup});
  const int64_t n = gate.numel();
  visit_floating(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    const T* pdh = dh.data<T>();
    const T* pg = gate.data<T>();
    const T* pu = up.data<T>();
    T* pdg = dgate.data<T>();
    T* pdu = dup.data<T>();
#pragma omp parallel for schedule(static) if (n >= 32768)
    for (int64_t i = 0; i < n; ++i) {
      const Acc g = static_cast<Acc>(pg[i]), u = static_cast<Acc>(pu[i]), d = static_cast<Acc>(pdh[i]);
      const Acc s = sigmoid(g);
      pdg[i] = static_cast<T>(d * u * s * (Acc(1) + g * (Acc(1) - s)));
      pdu[i] = static_cast<T>(d * g * s);
    }
  });
}

}  // namespace mlr::cpu

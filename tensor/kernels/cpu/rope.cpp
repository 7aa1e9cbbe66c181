// Rotary position embedding on x [batch, seq, heads, d], pair i < d/2 rotated by the angle whose
// cos/sin are cos[(batch,) pos, i], sin[(batch,) pos, i]:
//   half layout (Hugging Face rotate_half): (x1, x2) = (x[i], x[i + d/2])
//   interleaved layout:                     (x1, x2) = (x[2i], x[2i + 1])
//   forward:  y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin
//   backward: the rotation by -theta:  dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin
// Tables: angle = position * inv_freq[i], computed in f32 as Hugging Face does, so the tables
// carry its numbers. All tensors contiguous; math in f32 (f64 for f64), rounded once; the pairs of a
// head are one vector loop (simd.h), rows split over OpenMP threads.
#include <cmath>
#include <initializer_list>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {

// out = rotation of in by sign * theta (sign +1: forward, -1: backward), for the (batch, position)
// rows [begin, end): every head of a row uses the same table row.
template <typename T, typename C>
struct RotateRows {
  using A = compute_t<T>;
  const T* in;
  T* out;
  const C *cos, *sin;
  int64_t seq, heads, d;
  bool per_batch, half_layout;
  A sign;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    const int64_t half = d / 2;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t table_row = (per_batch ? row : row % seq) * half;
      const C* pc = cos + table_row;
      const C* ps = sin + table_row;
      for (int64_t h = 0; h < heads; ++h) {
        const T* x = in + (row * heads + h) * d;
        T* y = out + (row * heads + h) * d;
        if (half_layout) {
#pragma omp simd
          for (int64_t i = 0; i < half; ++i) {
            const A c = static_cast<A>(pc[i]), sn = static_cast<A>(ps[i]) * sign;
            const A x1 = to_compute(x[i]), x2 = to_compute(x[i + half]);
            y[i] = from_compute<T>(x1 * c - x2 * sn);
            y[i + half] = from_compute<T>(x2 * c + x1 * sn);
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < half; ++i) {
            const A c = static_cast<A>(pc[i]), sn = static_cast<A>(ps[i]) * sign;
            const A x1 = to_compute(x[2 * i]), x2 = to_compute(x[2 * i + 1]);
            y[2 * i] = from_compute<T>(x1 * c - x2 * sn);
            y[2 * i + 1] = from_compute<T>(x2 * c + x1 * sn);
          }
        }
      }
    }
  }
};

void rotate(const Tensor& out, const Tensor& in, const Tensor& cos, const Tensor& sin, RopeLayout layout, int sign) {
  check_kernel_contiguous("rope", "cpu", {&out, &in, &cos, &sin});
  const int64_t batch = in.size(0), seq = in.size(1), heads = in.size(2), d = in.size(3);
  const bool per_batch = cos.dim() == 3;  // [batch, seq, d/2] rather than [seq, d/2]
  visit_floating(in.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    visit_floating(cos.dtype(), "rope tables", [&](auto table_tag) {
      using C = decltype(table_tag);
      RotateRows<T, C> f{in.data<T>(), out.data<T>(), cos.data<C>(), sin.data<C>(), seq, heads, d,
                         per_batch, layout == RopeLayout::half, static_cast<A>(sign)};
      parallel_rows(batch * seq, std::max<int64_t>(1, 16384 / std::max<int64_t>(heads * d, 1)), f);
    });
  });
}

}  // namespace

void rope_forward(const Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  rotate(y, x, cos, sin, layout, +1);
}

void rope_backward(const Tensor& dx, const Tensor& dy, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  rotate(dx, dy, cos, sin, layout, -1);
}

void rope_tables(const Tensor& positions, const Tensor& inv_freq, const Tensor& cos, const Tensor& sin) {
  check_kernel_contiguous("rope_tables", "cpu", {&cos, &sin});
  const std::vector<int64_t> pos = positions.to_vector<int64_t>();
  const std::vector<float> freq = inv_freq.to_vector<float>();
  const int64_t n = static_cast<int64_t>(pos.size()), half = static_cast<int64_t>(freq.size());
  float* pc = cos.data<float>();
  float* ps = sin.data<float>();
#pragma omp parallel for schedule(static) if (n * half >= 16384)
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(pos[p]) * freq[i];
      pc[p * half + i] = std::cos(angle);
      ps[p * half + i] = std::sin(angle);
    }
  }
}

}  // namespace mlr::cpu

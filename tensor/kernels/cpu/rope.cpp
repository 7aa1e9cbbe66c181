// Rotary position embedding on x [batch, seq, heads, d], pair i < d/2 rotated by the angle whose
// cos/sin are cos[(batch,) pos, i], sin[(batch,) pos, i]:
//   half layout (Hugging Face rotate_half): (x1, x2) = (x[i], x[i + d/2])
//   interleaved layout:                     (x1, x2) = (x[2i], x[2i + 1])
//   forward:  y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin
//   backward: the rotation by -theta:  dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin
// Tables: angle = position * inv_freq[i], computed in f32 as Hugging Face does, so the tables
// carry its numbers. All tensors contiguous; math in f32 (f64 for f64), rounded once.
#include <cmath>
#include <initializer_list>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {
// out = rotation of in by sign * theta (sign +1: forward, -1: backward).
void rotate(const Tensor& out, const Tensor& in, const Tensor& cos, const Tensor& sin, RopeLayout layout, int sign) {
  check_kernel_contiguous("rope", "cpu", {&out, &in, &cos, &sin});
  const int64_t batch = in.size(0), seq = in.size(1), heads = in.size(2), d = in.size(3), half = d / 2;
  const bool per_batch = cos.dim() == 3;  // [batch, seq, d/2] rather than [seq, d/2]
  visit_floating(in.dtype(), "rope", [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
    visit_floating(cos.dtype(), "rope tables", [&](auto table_tag) {
      using C = decltype(table_tag);
      const T* px = in.data<T>();
      T* py = out.data<T>();
      const C* pc = cos.data<C>();
      const C* ps = sin.data<C>();
      // pair i of a head: element offsets of x1 and x2
      auto first = [&](int64_t i) { return layout == RopeLayout::half ? i : 2 * i; };
      auto second = [&](int64_t i) { return layout == RopeLayout::half ? i + half : 2 * i + 1; };
#pragma omp parallel for collapse(2) schedule(static) if (in.numel() >= 16384)
      for (int64_t b = 0; b < batch; ++b) {
        for (int64_t s = 0; s < seq; ++s) {
          const int64_t table_row = (per_batch ? b * seq + s : s) * half;
          for (int64_t h = 0; h < heads; ++h) {
            const int64_t base = ((b * seq + s) * heads + h) * d;
            for (int64_t i = 0; i < half; ++i) {
              const Acc c = static_cast<Acc>(pc[table_row + i]);
              const Acc sn = static_cast<Acc>(ps[table_row + i]) * static_cast<Acc>(sign);
              const Acc x1 = static_cast<Acc>(px[base + first(i)]), x2 = static_cast<Acc>(px[base + second(i)]);
              py[base + first(i)] = static_cast<T>(x1 * c - x2 * sn);
              py[base + second(i)] = static_cast<T>(x2 * c + x1 * sn);
            }
          }
        }
      }
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

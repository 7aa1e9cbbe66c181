// Softmax and log-softmax along one dimension (any dimension: rows may be strided), with their
// backward passes. Per row x (m = max_i x_i, subtracted so exp never overflows):
//   softmax:      y_i = exp(x_i - m) / sum_j exp(x_j - m)
//   log_softmax:  y_i = (x_i - m) - log(sum_j exp(x_j - m))
// Backward, given g = dL/dy:
//   softmax:      dx_i = y_i (g_i - sum_j g_j y_j)
//   log_softmax:  dx_i = g_i - exp(y_i) sum_j g_j
// Computed in f32 (f64 for f64), rounded once on store; row sums are pairwise. A row of all -inf
// has no defined softmax and gives NaN (as torch); a NaN anywhere in a row makes the row NaN.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/loops.h"

namespace mlr::cpu {

namespace {

template <typename T> struct acc_type { using type = T; };
template <> struct acc_type<bf16> { using type = float; };
template <> struct acc_type<f16> { using type = float; };
template <typename T> using acc_t = typename acc_type<T>::type;

template <typename T, typename A>
inline T store(A v) {
  if constexpr (std::is_same_v<T, A>) return v;
  else return T(static_cast<float>(v));
}

// Pairwise sum of a contiguous buffer: error grows like log n, not n (rows can be 100K+ wide).
template <typename A>
A pairwise_sum(const A* p, int64_t n) {
  if (n <= 128) {
    A lane[8] = {};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      for (int k = 0; k < 8; ++k) lane[k] += p[i + k];
    A s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; i < n; ++i) s += p[i];
    return s;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return pairwise_sum(p, half) + pairwise_sum(p + half, n - half);
}

// NaN-propagating row maximum.
template <typename A, typename T>
A row_max(const T* p, int64_t n, int64_t stride) {
  A m = -std::numeric_limits<A>::infinity();
  for (int64_t i = 0; i < n; ++i) {
    A v = static_cast<A>(p[i * stride]);
    if (v > m || std::isnan(v)) m = v;
    if (std::isnan(m)) break;
  }
  return m;
}

// Calls row(ptrs..., strides along dim) for every row along `dim`; `ts` are the tensors (first is
// the output). Rows are split over threads when there is enough work.
template <size_t N, typename F>
void for_each_row(const std::array<const Tensor*, N>& ts, int64_t dim, F row) {
  Shape shape = ts[0]->shape();
  const int64_t n = shape[dim];
  shape[dim] = 1;
  std::array<const Shape*, N> strides;
  for (size_t k = 0; k < N; ++k) strides[k] = &ts[k]->strides();
  strided_loop<N>(
      shape, strides,
      [&](const std::array<int64_t, N>& o, const std::array<int64_t, N>& st, int64_t rows) {
        std::array<int64_t, N> base;
        for (int64_t r = 0; r < rows; ++r) {
          for (size_t k = 0; k < N; ++k) base[k] = o[k] + r * st[k];
          row(base, n);
        }
      },
      std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)));
}

void check_args(const char* op, const Tensor& out, const std::vector<const Tensor*>& ins, int64_t dim) {
  MLR_CHECK(dim >= 0 && dim < out.dim(), "{}: dimension {} out of range for shape {}", op, dim,
            shape_str(out.shape()));
  for (const Tensor* t : ins) {
    MLR_CHECK(t->shape() == out.shape(), "{}: input shape {} and output shape {} differ", op, shape_str(t->shape()),
              shape_str(out.shape()));
    MLR_CHECK(t->dtype() == out.dtype(), "{}: input dtype {} and output dtype {} differ", op, t->dtype(), out.dtype());
  }
}

template <bool log>
void softmax_forward(const char* name, const Tensor& out, const Tensor& a, int64_t dim) {
  check_args(name, out, {&a}, dim);
  if (out.numel() == 0) return;
  visit_floating(a.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    T* po = static_cast<T*>(out.data_ptr());
    const T* pa = static_cast<const T*>(a.data_ptr());
    const int64_t so = out.stride(dim), sa = a.stride(dim);
    for_each_row<2>({&out, &a}, dim, [&](const std::array<int64_t, 2>& base, int64_t n) {
      thread_local std::vector<A> e;
      e.resize(static_cast<size_t>(n));
      const T* x = pa + base[1];
      T* y = po + base[0];
      const A m = row_max<A>(x, n, sa);
      for (int64_t i = 0; i < n; ++i) e[i] = std::exp(static_cast<A>(x[i * sa]) - m);
      const A s = pairwise_sum(e.data(), n);
      if constexpr (log) {
        // (x - m) - log s, not x - (m + log s): m + log s would round at the scale of m (1e4 in f32
        // loses 4 bits of log s), while x - m is exact for the values near the maximum that matter.
        const A log_s = std::log(s);
        for (int64_t i = 0; i < n; ++i) y[i * so] = store<T>((static_cast<A>(x[i * sa]) - m) - log_s);
      } else {
        const A inv = A(1) / s;
        for (int64_t i = 0; i < n; ++i) y[i * so] = store<T>(e[i] * inv);
      }
    });
  });
}

template <bool log>
void softmax_backward_impl(const char* name, const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim) {
  check_args(name, dx, {&g, &y}, dim);
  if (dx.numel() == 0) return;
  visit_floating(dx.dtype(), name, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    T* pd = static_cast<T*>(dx.data_ptr());
    const T* pg = static_cast<const T*>(g.data_ptr());
    const T* py = static_cast<const T*>(y.data_ptr());
    const int64_t sd = dx.stride(dim), sg = g.stride(dim), sy = y.stride(dim);
    for_each_row<3>({&dx, &g, &y}, dim, [&](const std::array<int64_t, 3>& base, int64_t n) {
      thread_local std::vector<A> t;
      t.resize(static_cast<size_t>(n));
      T* d = pd + base[0];
      const T* gr = pg + base[1];
      const T* yr = py + base[2];
      if constexpr (log) {
        for (int64_t i = 0; i < n; ++i) t[i] = static_cast<A>(gr[i * sg]);
        const A sum_g = pairwise_sum(t.data(), n);
        for (int64_t i = 0; i < n; ++i) d[i * sd] = store<T>(t[i] - std::exp(static_cast<A>(yr[i * sy])) * sum_g);
      } else {
        for (int64_t i = 0; i < n; ++i) t[i] = static_cast<A>(gr[i * sg]) * static_cast<A>(yr[i * sy]);
        const A dot = pairwise_sum(t.data(), n);
        for (int64_t i = 0; i < n; ++i) {
          const A yi = static_cast<A>(yr[i * sy]);
          d[i * sd] = store<T>(yi * (static_cast<A>(gr[i * sg]) - dot));
        }
      }
    });
  });
}

}  // namespace

void softmax(const Tensor& out, const Tensor& a, int64_t dim) { softmax_forward<false>("softmax", out, a, dim); }
void log_softmax(const Tensor& out, const Tensor& a, int64_t dim) {
  softmax_forward<true>("log_softmax", out, a, dim);
}
void softmax_backward(const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim) {
  softmax_backward_impl<false>("softmax_backward", dx, g, y, dim);
}
void log_softmax_backward(const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim) {
  softmax_backward_impl<true>("log_softmax_backward", dx, g, y, dim);
}

}  // namespace mlr::cpu

// The routed low-rank update of SMoRA (tensor/nn_ops.h states the math), computed sparsely: a
// token touches only the k ranks its router selected, so every product below costs k / r of the
// dense form (x A^T and (g o h) B^T over all r ranks, which the GPU path keeps: there the dense
// GEMMs are cheap next to gathers, while on the CPU the FLOPs are the bound).
//
// Forward, per token t with selected ranks S_t (ascending):
//   Z = sum_{i in S_t} s_i,  g_i = c s_i / Z,  h_i = x_t . A_i,  y_t = sum_i (g_i h_i) Bt_i
// Backward, given dy_t:
//   u_i = dy_t . Bt_i,  dx_t = sum_i (g_i u_i) A_i,  dg_i = u_i h_i,
//   ds_i = (c / Z) (dg_i - sum_j dg_j g_j / c)   (0 outside S_t)
//   dA_i = sum_t g_ti u_ti x_t,  dBt_i = sum_t g_ti h_ti dy_t   (over the tokens that selected i)
// The router's backward (sigmoid scores s = sigmoid(x W^T)): ds is zero outside S_t, so is
//   dl_i = ds_i s_i (1 - s_i);  dx_t (+)= sum_i dl_i W_i,  dW_i = sum_t dl_ti x_t.
// Bt = B^T (r x out) is copied once per call so that every row the loops read is contiguous.
// The token loops run in parallel; the weight gradients run in parallel over ranks, each summing
// its tokens in ascending order, so the result does not depend on the thread count. Vector loops
// (simd.h) in the compute type of T (f32; f64 for f64), rounded once on store.
#include <type_traits>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cpu {

namespace {

// The selected ranks of one token's mask row and the sum of their scores.
template <typename A, typename T>
MLR_ALWAYS_INLINE int64_t selected_ranks(const bool* mask, const T* s, int64_t r, int64_t* idx, A& z) {
  int64_t n = 0;
  z = A(0);
  for (int64_t i = 0; i < r; ++i)
    if (mask[i]) {
      idx[n++] = i;
      z += to_compute(s[i]);
    }
  return n;
}

// out[j] = x . rows[idx[j]] for j < count (rows of length n in the compute type). f32 in explicit
// vectors, four rows per pass over x; other types in plain loops.
template <SimdLevel L, typename A, typename T>
MLR_ALWAYS_INLINE void dots(const T* x, const A* rows, int64_t n, const int64_t* idx, int64_t count, A* out) {
  if constexpr (std::is_same_v<T, float>) {
    constexpr int W = kVecWidth<L>;
    const int64_t vec_end = n / W * W;
    int64_t j = 0;
    for (; j + 4 <= count; j += 4) {
      const float *r0 = rows + idx[j] * n, *r1 = rows + idx[j + 1] * n, *r2 = rows + idx[j + 2] * n,
                  *r3 = rows + idx[j + 3] * n;
      Vec<W> a0 = {}, a1 = {}, a2 = {}, a3 = {};
      for (int64_t c = 0; c < vec_end; c += W) {
        const Vec<W> xv = load<W>(x + c);
        a0 += xv * load<W>(r0 + c);
        a1 += xv * load<W>(r1 + c);
        a2 += xv * load<W>(r2 + c);
        a3 += xv * load<W>(r3 + c);
      }
      float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (int l = 0; l < W; ++l) {
        s0 += a0[l];
        s1 += a1[l];
        s2 += a2[l];
        s3 += a3[l];
      }
      for (int64_t c = vec_end; c < n; ++c) {
        s0 += x[c] * r0[c];
        s1 += x[c] * r1[c];
        s2 += x[c] * r2[c];
        s3 += x[c] * r3[c];
      }
      out[j] = s0;
      out[j + 1] = s1;
      out[j + 2] = s2;
      out[j + 3] = s3;
    }
    for (; j < count; ++j) {
      const float* r0 = rows + idx[j] * n;
      Vec<W> a0 = {};
      for (int64_t c = 0; c < vec_end; c += W) a0 += load<W>(x + c) * load<W>(r0 + c);
      float s0 = 0;
      for (int l = 0; l < W; ++l) s0 += a0[l];
      for (int64_t c = vec_end; c < n; ++c) s0 += x[c] * r0[c];
      out[j] = s0;
    }
  } else {
    for (int64_t j = 0; j < count; ++j) {
      const A* r0 = rows + idx[j] * n;
      A acc = A(0);
      for (int64_t c = 0; c < n; ++c) acc += to_compute(x[c]) * r0[c];
      out[j] = acc;
    }
  }
}

// out[c] = sum_j coef[j] * rows[idx[j]][c] (rows of length n, in the compute type); with
// Accumulate, out[c] += that sum.
template <SimdLevel L, bool Accumulate = false, typename A, typename T>
MLR_ALWAYS_INLINE void combine_rows(T* out, const A* rows, int64_t n, const int64_t* idx, const A* coef,
                                    int64_t count) {
  if constexpr (std::is_same_v<T, float>) {
    constexpr int W = kVecWidth<L>;
    const int64_t vec_end = n / W * W;
    for (int64_t c = 0; c < vec_end; c += W) {
      Vec<W> acc = {};
      if constexpr (Accumulate) acc = load<W>(out + c);
      for (int64_t j = 0; j < count; ++j) acc += coef[j] * load<W>(rows + idx[j] * n + c);
      store<W>(out + c, acc);
    }
    for (int64_t c = vec_end; c < n; ++c) {
      float acc = Accumulate ? out[c] : 0.0f;
      for (int64_t j = 0; j < count; ++j) acc += coef[j] * rows[idx[j] * n + c];
      out[c] = acc;
    }
  } else {
    for (int64_t c = 0; c < n; ++c) {
      A acc = Accumulate ? to_compute(out[c]) : A(0);
      for (int64_t j = 0; j < count; ++j) acc += coef[j] * rows[idx[j] * n + c];
      out[c] = from_compute<T>(acc);
    }
  }
}

template <typename T>
struct Forward {
  using A = compute_t<T>;
  const T *x, *s;
  const bool* mask;
  const A *a, *bt;  // A [r, in] and B^T [r, out] in the compute type
  T *y, *h, *g;
  int64_t r, in, out;
  double scale;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    std::vector<int64_t> idx(static_cast<size_t>(r));
    std::vector<A> hs(static_cast<size_t>(r)), coef(static_cast<size_t>(r));
    for (int64_t t = begin; t < end; ++t) {
      A z;
      const int64_t n = selected_ranks(mask + t * r, s + t * r, r, idx.data(), z);
      T* ht = h + t * r;
      T* gt = g + t * r;
      for (int64_t i = 0; i < r; ++i) ht[i] = gt[i] = from_compute<T>(A(0));
      dots<L>(x + t * in, a, in, idx.data(), n, hs.data());
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = idx[j];
        const A gi = static_cast<A>(scale) * to_compute(s[t * r + i]) / z;
        ht[i] = from_compute<T>(hs[j]);
        gt[i] = from_compute<T>(gi);
        coef[j] = gi * hs[j];
      }
      combine_rows<L>(y + t * out, bt, out, idx.data(), coef.data(), n);
    }
  }
};

template <typename T>
struct BackwardTokens {
  using A = compute_t<T>;
  const T *dy, *s, *h, *g;
  const bool* mask;
  const A *a, *bt;
  T *dx, *ds;
  A* coef_a;  // [T, r]: g u, the coefficient of x_t in dA_i (0 outside the selection)
  int64_t r, in, out;
  double scale;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    std::vector<int64_t> idx(static_cast<size_t>(r));
    std::vector<A> us(static_cast<size_t>(r)), cu(static_cast<size_t>(r)), dg(static_cast<size_t>(r));
    const A c = static_cast<A>(scale);
    for (int64_t t = begin; t < end; ++t) {
      A z;
      const int64_t n = selected_ranks(mask + t * r, s + t * r, r, idx.data(), z);
      A* ca = coef_a + t * r;
      T* dst = ds + t * r;
      for (int64_t i = 0; i < r; ++i) {
        ca[i] = A(0);
        dst[i] = from_compute<T>(A(0));
      }
      A dg_dot_g = A(0);
      dots<L>(dy + t * out, bt, out, idx.data(), n, us.data());
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = idx[j];
        const A u = us[j];
        const A gi = to_compute(g[t * r + i]);
        dg[j] = u * to_compute(h[t * r + i]);
        dg_dot_g += dg[j] * gi;
        cu[j] = ca[i] = gi * u;
      }
      for (int64_t j = 0; j < n; ++j) dst[idx[j]] = from_compute<T>(c / z * (dg[j] - dg_dot_g / c));
      combine_rows<L>(dx + t * in, a, in, idx.data(), cu.data(), n);
    }
  }
};

// dW_i = sum over the tokens t that selected rank i of coef[t, i] * src_t (src [T, n]).
template <typename T>
struct WeightGrad {
  using A = compute_t<T>;
  const bool* mask;
  const A* coef;  // [T, r]
  const T* src;   // [T, n]
  A* dw;          // [r, n]
  int64_t tokens, r, n;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      A* out = dw + i * n;
      for (int64_t c = 0; c < n; ++c) out[c] = A(0);
      for (int64_t t = 0; t < tokens; ++t) {
        if (!mask[t * r + i]) continue;
        const A k = coef[t * r + i];
        const T* row = src + t * n;
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) out[c] += k * to_compute(row[c]);
      }
    }
  }
};

// The sigmoid router's backward over the selected entries: dl_i = ds_i s_i (1 - s_i),
// dx_t (+)= sum_i dl_i W_i, and the coefficients dl for dW.
template <typename T>
struct RouterTokens {
  using A = compute_t<T>;
  const T *ds, *s;
  const bool* mask;
  const A* w;  // [r, in] in the compute type
  T* dx;
  A* coef;  // [T, r]
  int64_t r, in;
  bool accumulate;
  template <SimdLevel L>
  MLR_ALWAYS_INLINE void rows(int64_t begin, int64_t end) {
    std::vector<int64_t> idx(static_cast<size_t>(r));
    std::vector<A> dl(static_cast<size_t>(r));
    for (int64_t t = begin; t < end; ++t) {
      int64_t n = 0;
      A* ct = coef + t * r;
      for (int64_t i = 0; i < r; ++i) {
        ct[i] = A(0);
        if (!mask[t * r + i]) continue;
        const A si = to_compute(s[t * r + i]);
        ct[i] = dl[n] = to_compute(ds[t * r + i]) * si * (A(1) - si);
        idx[n++] = i;
      }
      T* dxt = dx + t * in;
      if (accumulate) {
        combine_rows<L, true>(dxt, w, in, idx.data(), dl.data(), n);
      } else {
        combine_rows<L>(dxt, w, in, idx.data(), dl.data(), n);
      }
    }
  }
};

// Runs WeightGrad over the r ranks: dW [r, n] in the compute type.
template <typename T>
std::vector<compute_t<T>> weight_grad(const bool* mask, const compute_t<T>* coef, const T* src, int64_t tokens,
                                      int64_t r, int64_t n) {
  std::vector<compute_t<T>> dw(static_cast<size_t>(r * n));
  WeightGrad<T> f{mask, coef, src, dw.data(), tokens, r, n};
  parallel_rows(r, 1, f);
  return dw;
}

template <typename T>
void store_rounded(T* dst, const std::vector<compute_t<T>>& src) {
  for (size_t i = 0; i < src.size(); ++i) dst[i] = from_compute<T>(src[i]);
}

template <typename T>
std::vector<compute_t<T>> to_compute_copy(const T* p, int64_t n) {
  std::vector<compute_t<T>> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = to_compute(p[i]);
  return v;
}

// B [out, r] -> B^T [r, out] in the compute type.
template <typename T>
std::vector<compute_t<T>> transposed(const T* b, int64_t out, int64_t r) {
  std::vector<compute_t<T>> bt(static_cast<size_t>(out * r));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < r; ++i) bt[static_cast<size_t>(i * out + o)] = to_compute(b[o * r + i]);
  return bt;
}

void check_shapes(const char* kernel, const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& mask) {
  MLR_CHECK(x.dim() == 2 && a.dim() == 2 && b.dim() == 2 && mask.dim() == 2 && a.size(1) == x.size(1) &&
                b.size(1) == a.size(0) && mask.size(0) == x.size(0) && mask.size(1) == a.size(0) &&
                mask.dtype() == DType::boolean,
            "{} (cpu kernel): expects x [T, in], A [r, in], B [out, r], a bool mask [T, r]; got {}, {}, {}, {} {}",
            kernel, shape_str(x.shape()), shape_str(a.shape()), shape_str(b.shape()), dtype_name(mask.dtype()),
            shape_str(mask.shape()));
}

}  // namespace

void gated_lowrank_forward(const Tensor& y, const Tensor& h, const Tensor& g, const Tensor& x, const Tensor& a,
                           const Tensor& b, const Tensor& s, const Tensor& mask, double scale) {
  check_kernel_contiguous("gated_lowrank_forward", "cpu", {&y, &h, &g, &x, &a, &b, &s, &mask});
  check_shapes("gated_lowrank_forward", x, a, b, mask);
  const int64_t tokens = x.size(0), in = x.size(1), r = a.size(0), out = b.size(0);
  visit_floating(x.dtype(), "gated_lowrank_forward", [&](auto tag) {
    using T = decltype(tag);
    const auto a_c = to_compute_copy(a.data<T>(), r * in);
    const auto bt = transposed(b.data<T>(), out, r);
    Forward<T> f{x.data<T>(), s.data<T>(), mask.data<bool>(), a_c.data(), bt.data(), y.data<T>(), h.data<T>(),
                 g.data<T>(), r, in, out, scale};
    parallel_rows(tokens, 16, f);
  });
}

void gated_lowrank_backward(const Tensor& dx, const Tensor& da, const Tensor& db, const Tensor& ds, const Tensor& dy,
                            const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s, const Tensor& mask,
                            const Tensor& h, const Tensor& g, double scale) {
  check_kernel_contiguous("gated_lowrank_backward", "cpu", {&dx, &da, &db, &ds, &dy, &x, &a, &b, &s, &mask, &h, &g});
  check_shapes("gated_lowrank_backward", x, a, b, mask);
  const int64_t tokens = x.size(0), in = x.size(1), r = a.size(0), out = b.size(0);
  visit_floating(x.dtype(), "gated_lowrank_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    const auto a_c = to_compute_copy(a.data<T>(), r * in);
    const auto bt = transposed(b.data<T>(), out, r);
    std::vector<A> coef_a(static_cast<size_t>(tokens * r));
    BackwardTokens<T> per_token{dy.data<T>(), s.data<T>(), h.data<T>(), g.data<T>(), mask.data<bool>(), a_c.data(),
                                bt.data(),    dx.data<T>(), ds.data<T>(), coef_a.data(), r, in, out, scale};
    parallel_rows(tokens, 16, per_token);

    // dA_i = sum_t (g u)_ti x_t
    store_rounded(da.data<T>(), weight_grad(mask.data<bool>(), coef_a.data(), x.data<T>(), tokens, r, in));

    // dBt_i = sum_t (g h)_ti dy_t, then dB = dBt^T
    std::vector<A> coef_b(static_cast<size_t>(tokens * r));
    const T *ph = h.data<T>(), *pg = g.data<T>();
    for (int64_t i = 0; i < tokens * r; ++i) coef_b[static_cast<size_t>(i)] = to_compute(pg[i]) * to_compute(ph[i]);
    const std::vector<A> dbt = weight_grad(mask.data<bool>(), coef_b.data(), dy.data<T>(), tokens, r, out);
    T* pdb = db.data<T>();
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < r; ++i) pdb[o * r + i] = from_compute<T>(dbt[static_cast<size_t>(i * out + o)]);
  });
}

void sigmoid_router_backward(const Tensor& dx, const Tensor& dw, const Tensor& ds, const Tensor& x, const Tensor& w,
                             const Tensor& s, const Tensor& mask, bool accumulate) {
  check_kernel_contiguous("sigmoid_router_backward", "cpu", {&dx, &dw, &ds, &x, &w, &s, &mask});
  const int64_t tokens = x.size(0), in = x.size(1), r = w.size(0);
  MLR_CHECK(w.size(1) == in && ds.size(0) == tokens && ds.size(1) == r && mask.dtype() == DType::boolean,
            "sigmoid_router_backward (cpu kernel): expects x [T, in], W [r, in], ds and a bool mask [T, r]; got {}, {}, "
            "{}, {}",
            shape_str(x.shape()), shape_str(w.shape()), shape_str(ds.shape()), shape_str(mask.shape()));
  visit_floating(x.dtype(), "sigmoid_router_backward", [&](auto tag) {
    using T = decltype(tag);
    using A = compute_t<T>;
    const auto w_c = to_compute_copy(w.data<T>(), r * in);
    std::vector<A> coef(static_cast<size_t>(tokens * r));
    RouterTokens<T> per_token{ds.data<T>(), s.data<T>(), mask.data<bool>(), w_c.data(), dx.data<T>(),
                              coef.data(),  r,           in,               accumulate};
    parallel_rows(tokens, 16, per_token);
    store_rounded(dw.data<T>(), weight_grad(mask.data<bool>(), coef.data(), x.data<T>(), tokens, r, in));
  });
}

}  // namespace mlr::cpu

// Reductions: sum, mean, amax, amin over a set of dimensions; argmax and logsumexp along one.
//
//   sum  = sum_i x_i                       (accumulated in f32; f64 for f64; i64 for ints and bool)
//   mean = sum / n                         (0 / 0 = NaN over zero elements)
//   amax = max_i x_i, amin = min_i x_i     (a NaN anywhere gives NaN, like torch)
//   argmax = first i with x_i = max; a NaN counts as the maximum (the first NaN wins)
//   logsumexp = m + log(sum_i exp(x_i - m)), m = max_i x_i   (all -inf gives -inf, +inf gives +inf)
//
// Accuracy: a row is summed pairwise (8 vectorisable lanes per 128-element block, halves added
// recursively), so the rounding error grows like log n rather than n; the partial sums of separate
// rows (or of 64K-element chunks of one long row) are combined with Kahan compensation. The chunks
// are fixed by the shape, not by the thread count, so results do not depend on the number of threads.
//
// Two loop orders. "Rows": each output reduces its own elements, innermost reduced dimension
// first (the right order when the reduced elements are the contiguous ones: sum over the last dim).
// "Tiles": when a kept dimension is more contiguous than every reduced one (sum over dim 0 of
// [N, D]), up to 64 neighbouring outputs are accumulated together, one contiguous load of 64
// elements per step, with Kahan compensation per output.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/loops.h"

namespace mlr::cpu {

namespace {

template <typename T> struct acc_type { using type = T; };
template <> struct acc_type<bf16> { using type = float; };
template <> struct acc_type<f16> { using type = float; };
template <> struct acc_type<int32_t> { using type = int64_t; };
template <> struct acc_type<bool> { using type = int64_t; };
template <typename T> using acc_t = typename acc_type<T>::type;

template <typename A>
inline bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>) return std::isnan(v);
  return false;
}

template <typename O, typename A>
inline O store(A v) {
  if constexpr (std::is_same_v<O, A>) {
    return v;
  } else if constexpr (std::is_same_v<O, bool>) {
    return v != A(0);
  } else if constexpr (std::is_same_v<O, bf16> || std::is_same_v<O, f16>) {
    return O(static_cast<float>(v));
  } else {
    return static_cast<O>(v);
  }
}

constexpr int64_t kChunk = 65536;  // longest run summed as one pairwise tree
constexpr int64_t kTile = 64;      // outputs accumulated together in the tile order

// Max / min that let a NaN win, whichever side it is on.
template <typename A> inline A nan_max(A m, A x) { return (x > m || is_nan(x)) && !is_nan(m) ? x : m; }
template <typename A> inline A nan_min(A m, A x) { return (x < m || is_nan(x)) && !is_nan(m) ? x : m; }

template <typename A> inline A lowest() {
  return std::numeric_limits<A>::has_infinity ? -std::numeric_limits<A>::infinity() : std::numeric_limits<A>::lowest();
}
template <typename A> inline A highest() {
  return std::numeric_limits<A>::has_infinity ? std::numeric_limits<A>::infinity() : std::numeric_limits<A>::max();
}

// Pairwise sum of f(p[i * stride]) for i < n.
template <typename A, typename T, typename F>
A pairwise_sum(const T* p, int64_t n, int64_t stride, F f) {
  if (n <= 128) {
    A lane[8] = {};
    int64_t i = 0;
    if (stride == 1) {
      for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) lane[k] += f(p[i + k]);
    } else {
      for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; ++k) lane[k] += f(p[(i + k) * stride]);
    }
    A s = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; i < n; ++i) s += f(p[i * stride]);
    return s;
  }
  int64_t half = n / 2;
  half -= half % 8;
  return pairwise_sum<A>(p, half, stride, f) + pairwise_sum<A>(p + half * stride, n - half, stride, f);
}

// Kahan-compensated running sum (exact and free for integers: c stays 0).
template <typename A>
struct Kahan {
  A s = 0, c = 0;
  void add(A x) {
    if constexpr (std::is_floating_point_v<A>) {
      A y = x - c;
      A t = s + y;
      c = (t - s) - y;
      s = t;
    } else {
      s += x;
    }
  }
};

// The rule of every reduction of tensor/op_table.h. An `adds` op sums its elements (pairwise in
// a run, Kahan-compensated across runs) and finishes the sum; an `extremum` op starts from init and
// combines. The dispatch in reduce() instantiates the rule of every entry of the table, so an
// entry without its rule here does not compile.
template <ReduceOp op> struct ReduceRule;
template <> struct ReduceRule<ReduceOp::sum> {
  template <typename A> static A finish(A s, int64_t) { return s; }
};
template <> struct ReduceRule<ReduceOp::mean> {
  template <typename A> static A finish(A s, int64_t count) { return s / static_cast<A>(count); }  // 0/0 = NaN
};
template <> struct ReduceRule<ReduceOp::amax> {
  template <typename A> static A init() { return lowest<A>(); }
  template <typename A> static A combine(A m, A x) { return nan_max(m, x); }
};
template <> struct ReduceRule<ReduceOp::amin> {
  template <typename A> static A init() { return highest<A>(); }
  template <typename A> static A combine(A m, A x) { return nan_min(m, x); }
};

template <ReduceOp op> constexpr bool kAdds = op_info(op).kind == ReduceKind::adds;

// Combines per-run results of one output.
template <ReduceOp op, typename A>
struct Combiner {
  using Rule = ReduceRule<op>;
  static A start() {
    if constexpr (kAdds<op>) return A(0);
    else return Rule::template init<A>();
  }
  Kahan<A> sum;
  A ext = start();
  void add(A part) {
    if constexpr (kAdds<op>) sum.add(part);
    else ext = Rule::combine(ext, part);
  }
  A result(int64_t count) const {
    if constexpr (kAdds<op>) return Rule::finish(sum.s, count);
    else return ext;
  }
};

// The reduction of one strided run of n elements.
template <ReduceOp op, typename A, typename T>
A reduce_run(const T* p, int64_t n, int64_t stride) {
  if constexpr (kAdds<op>) {
    return pairwise_sum<A>(p, n, stride, [](T v) { return static_cast<A>(v); });
  } else {
    A m = ReduceRule<op>::template init<A>();
    for (int64_t i = 0; i < n; ++i) m = ReduceRule<op>::combine(m, static_cast<A>(p[i * stride]));
    return m;
  }
}

struct Dim {
  int64_t size;
  int64_t a_stride;
  int64_t out_stride;
};

// Offsets of a flat index over dims (row-major).
inline void offsets_of(int64_t flat, const std::vector<Dim>& dims, int64_t& a_off, int64_t& out_off) {
  a_off = 0;
  out_off = 0;
  for (int64_t d = static_cast<int64_t>(dims.size()) - 1; d >= 0; --d) {
    int64_t i = flat % dims[d].size;
    flat /= dims[d].size;
    a_off += i * dims[d].a_stride;
    out_off += i * dims[d].out_stride;
  }
}

// Merges neighbours (outer, inner) when outer's strides equal inner's times inner's size.
std::vector<Dim> merge(const std::vector<Dim>& dims) {
  std::vector<Dim> out;
  for (const Dim& d : dims) {
    if (!out.empty() && out.back().a_stride == d.a_stride * d.size && out.back().out_stride == d.out_stride * d.size) {
      out.back().size *= d.size;
      out.back().a_stride = d.a_stride;
      out.back().out_stride = d.out_stride;
    } else {
      out.push_back(d);
    }
  }
  return out;
}

int64_t product(const std::vector<Dim>& dims) {
  int64_t n = 1;
  for (const Dim& d : dims) n *= d.size;
  return n;
}

template <ReduceOp op, typename T, typename O>
void reduce_impl(const Tensor& out, const Tensor& a, const std::vector<bool>& mask) {
  using A = acc_t<T>;
  const T* pa = static_cast<const T*>(a.data_ptr());
  O* po = static_cast<O*>(out.data_ptr());
  std::vector<Dim> kept, red;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) == 1) continue;
    if (mask[d]) red.push_back({a.size(d), a.stride(d), 0});
    else kept.push_back({a.size(d), a.stride(d), out.stride(d)});
  }
  const int64_t count = product(red);
  // Reduced dims can be visited in any order: innermost = smallest stride, so runs are as
  // contiguous as the layout allows.
  std::stable_sort(red.begin(), red.end(), [](const Dim& x, const Dim& y) { return x.a_stride > y.a_stride; });
  red = merge(red);
  kept = merge(kept);
  if (red.empty()) red.push_back({1, 0, 0});
  const int64_t n_out = product(kept);
  if (n_out == 0) return;

  if (count == 0) {  // sum of nothing is 0, the mean NaN (amax/amin are rejected by the front-end)
    Combiner<op, A> c;
    const O v = store<O>(c.result(0));
    for (int64_t i = 0; i < n_out; ++i) {
      int64_t ao, oo;
      offsets_of(i, kept, ao, oo);
      po[oo] = v;
    }
    return;
  }

  const Dim inner = red.back();
  const std::vector<Dim> outer_red(red.begin(), red.end() - 1);
  const int64_t n_outer_red = product(outer_red);
  const bool parallel = n_out * count >= 32768 && omp_get_max_threads() > 1 && !omp_in_parallel();

  // Tile order: the most contiguous kept dimension beats the innermost reduced one.
  auto kept_min = std::min_element(kept.begin(), kept.end(),
                                   [](const Dim& x, const Dim& y) { return x.a_stride < y.a_stride; });
  if (kept_min != kept.end() && kept_min->a_stride < inner.a_stride) {
    const Dim tile_dim = *kept_min;
    std::vector<Dim> others(kept.begin(), kept.end());
    others.erase(others.begin() + (kept_min - kept.begin()));
    const int64_t n_tiles = (tile_dim.size + kTile - 1) / kTile;
    const int64_t n_jobs = product(others) * n_tiles;
    auto job = [&](int64_t j) {
      int64_t ao, oo;
      offsets_of(j / n_tiles, others, ao, oo);
      const int64_t t0 = (j % n_tiles) * kTile;
      const int64_t w = std::min<int64_t>(kTile, tile_dim.size - t0);
      ao += t0 * tile_dim.a_stride;
      oo += t0 * tile_dim.out_stride;
      Combiner<op, A> acc[kTile];
      std::vector<int64_t> idx(red.size(), 0);
      int64_t r_off = 0;
      const int64_t ts = tile_dim.a_stride;
      for (int64_t r = 0; r < count; ++r) {
        const T* p = pa + ao + r_off;
        if (ts == 1) {
          for (int64_t k = 0; k < w; ++k) acc[k].add(static_cast<A>(p[k]));
        } else {
          for (int64_t k = 0; k < w; ++k) acc[k].add(static_cast<A>(p[k * ts]));
        }
        for (int64_t d = static_cast<int64_t>(red.size()) - 1; d >= 0; --d) {  // odometer over reduced dims
          r_off += red[d].a_stride;
          if (++idx[d] < red[d].size) break;
          r_off -= red[d].a_stride * red[d].size;
          idx[d] = 0;
        }
      }
      for (int64_t k = 0; k < w; ++k) po[oo + k * tile_dim.out_stride] = store<O>(acc[k].result(count));
    };
    if (parallel && n_jobs > 1) {
#pragma omp parallel for schedule(static)
      for (int64_t j = 0; j < n_jobs; ++j) job(j);
    } else {
      for (int64_t j = 0; j < n_jobs; ++j) job(j);
    }
    return;
  }

  // Row order. Each output's elements split into runs: the innermost reduced dim, cut into chunks
  // of kChunk; run r (in row-major order) gives one partial, combined in order.
  const int64_t chunks_per_run = (inner.size + kChunk - 1) / kChunk;
  const int64_t n_parts = n_outer_red * chunks_per_run;
  auto part = [&](int64_t a_base, int64_t q) {
    int64_t ro, unused;
    offsets_of(q / chunks_per_run, outer_red, ro, unused);
    const int64_t c0 = (q % chunks_per_run) * kChunk;
    const int64_t len = std::min(kChunk, inner.size - c0);
    return reduce_run<op, A>(pa + a_base + ro + c0 * inner.a_stride, len, inner.a_stride);
  };
  if (parallel && n_out < 4 * omp_get_max_threads() && n_parts > 1) {
    // Few outputs with much work each: the parts of one output in parallel.
    std::vector<A> parts(static_cast<size_t>(n_parts));
    for (int64_t i = 0; i < n_out; ++i) {
      int64_t ao, oo;
      offsets_of(i, kept, ao, oo);
#pragma omp parallel for schedule(static)
      for (int64_t q = 0; q < n_parts; ++q) parts[q] = part(ao, q);
      Combiner<op, A> c;
      for (int64_t q = 0; q < n_parts; ++q) c.add(parts[q]);
      po[oo] = store<O>(c.result(count));
    }
    return;
  }
  auto one_output = [&](int64_t i) {
    int64_t ao, oo;
    offsets_of(i, kept, ao, oo);
    Combiner<op, A> c;
    for (int64_t q = 0; q < n_parts; ++q) c.add(part(ao, q));
    po[oo] = store<O>(c.result(count));
  };
  if (parallel) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n_out; ++i) one_output(i);
  } else {
    for (int64_t i = 0; i < n_out; ++i) one_output(i);
  }
}

// Shape of a with dimension dim set to 1: the index space of "rows along dim".
Shape rows_shape(const Tensor& a, int64_t dim) {
  Shape s = a.shape();
  s[dim] = 1;
  return s;
}

}  // namespace

void reduce(ReduceOp op, const Tensor& out, const Tensor& a, const std::vector<bool>& reduce_mask) {
  MLR_CHECK(static_cast<int64_t>(reduce_mask.size()) == a.dim(), "reduce: mask has {} entries for a {}-d tensor",
            reduce_mask.size(), a.dim());
  MLR_CHECK(out.dim() == a.dim() && out.is_contiguous(),
            "reduce: output shape {} must be the contiguous keepdim layout of input shape {}", shape_str(out.shape()),
            shape_str(a.shape()));
  for (int64_t d = 0; d < a.dim(); ++d)
    MLR_CHECK(out.size(d) == (reduce_mask[d] ? 1 : a.size(d)), "reduce: output shape {} does not fit input shape {}",
              shape_str(out.shape()), shape_str(a.shape()));
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    auto with_op = [&](auto out_tag) {
      using O = decltype(out_tag);
      switch (op) {
#define MLR_CPU_CASE(name, ...) \
  case ReduceOp::name: return reduce_impl<ReduceOp::name, T, O>(out, a, reduce_mask);
        MLR_REDUCE_OPS(MLR_CPU_CASE)
#undef MLR_CPU_CASE
      }
      throw Error(fmt::format("reduce: op code {} is not in the op table", static_cast<int>(op)));
    };
    if (out.dtype() == a.dtype()) {
      with_op(T{});
    } else {
      MLR_CHECK(out.dtype() == DType::i64 && !is_floating(a.dtype()),
                "reduce: output dtype {} for input dtype {} (expected the input's, or i64 for an integer sum)",
                out.dtype(), a.dtype());
      with_op(int64_t{});
    }
  });
}

void argmax(const Tensor& out, const Tensor& a, int64_t dim) {
  MLR_CHECK(dim >= 0 && dim < a.dim(), "argmax: dimension {} out of range for shape {}", dim, shape_str(a.shape()));
  MLR_CHECK(out.dtype() == DType::i64 && out.shape() == rows_shape(a, dim),
            "argmax: output ({} {}) must be i64 of shape {}", out.dtype(), shape_str(out.shape()),
            shape_str(rows_shape(a, dim)));
  const int64_t n = a.size(dim), s = a.stride(dim);
  MLR_CHECK(n > 0, "argmax: dimension {} of shape {} is empty", dim, shape_str(a.shape()));
  visit_dtype(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pa = static_cast<const T*>(a.data_ptr());
    int64_t* po = out.data<int64_t>();
    strided_loop<2>(
        rows_shape(a, dim), {&out.strides(), &a.strides()},
        [&](const std::array<int64_t, 2>& o, const std::array<int64_t, 2>& st, int64_t rows) {
          for (int64_t r = 0; r < rows; ++r) {
            const T* p = pa + o[1] + r * st[1];
            A best = static_cast<A>(p[0]);
            int64_t at = 0;
            for (int64_t i = 1; i < n && !is_nan(best); ++i) {
              A v = static_cast<A>(p[i * s]);
              if (v > best || is_nan(v)) {
                best = v;
                at = i;
              }
            }
            po[o[0] + r * st[0]] = at;
          }
        },
        std::max<int64_t>(1, 32768 / n));
  });
}

void logsumexp(const Tensor& out, const Tensor& a, int64_t dim) {
  MLR_CHECK(dim >= 0 && dim < a.dim(), "logsumexp: dimension {} out of range for shape {}", dim,
            shape_str(a.shape()));
  MLR_CHECK(out.dtype() == a.dtype() && out.shape() == rows_shape(a, dim),
            "logsumexp: output ({} {}) must be {} of shape {}", out.dtype(), shape_str(out.shape()), a.dtype(),
            shape_str(rows_shape(a, dim)));
  const int64_t n = a.size(dim), s = a.stride(dim);
  visit_floating(a.dtype(), "logsumexp", [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const T* pa = static_cast<const T*>(a.data_ptr());
    T* po = static_cast<T*>(out.data_ptr());
    strided_loop<2>(
        rows_shape(a, dim), {&out.strides(), &a.strides()},
        [&](const std::array<int64_t, 2>& o, const std::array<int64_t, 2>& st, int64_t rows) {
          for (int64_t r = 0; r < rows; ++r) {
            const T* p = pa + o[1] + r * st[1];
            const A m = reduce_run<ReduceOp::amax, A>(p, n, s);
            A result;
            if (std::isinf(m) || std::isnan(m)) {
              result = m;  // all -inf (or empty) -> -inf; an inf -> inf; NaN -> NaN
            } else {
              result = m + std::log(pairwise_sum<A>(p, n, s, [m](T v) { return std::exp(static_cast<A>(v) - m); }));
            }
            po[o[0] + r * st[0]] = store<T>(result);
          }
        },
        std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)));
  });
}

}  // namespace mlr::cpu

// Reductions: sum, mean, amax, amin over a set of dimensions; argmax and logsumexp along one.
//
//   sum  = sum_i x_i                       (accumulated in f32; f64 for f64; i64 for ints and bool)
//   mean = sum / n                         (0 / 0 = NaN over zero elements)
//   amax = max_i x_i, amin = min_i x_i     (a NaN anywhere gives NaN)
//   argmax = first i with x_i = max; a NaN counts as the maximum (the first NaN wins)
//   logsumexp = m + log(sum_i exp(x_i - m)), m = max_i x_i   (all -inf gives -inf, +inf gives +inf)
//
// reduce: the input's dims are split into kept dims (one output each, row-major = the contiguous
// output's order) and reduced dims (sorted so the smallest stride is innermost, then merged).
// Two kernels:
//   rows:    a group of threads (a warp, or the block for long reductions) per output; each thread
//            strides over the reduced elements, then the group combines (tree order).
//   columns: one thread per output, used when a kept dimension is more contiguous than every
//            reduced one (sum over dim 0 of [N, D]): 32 neighbouring outputs per block read 32
//            neighbouring elements per step; 8 threads per output split the reduced range and
//            combine through shared memory.
// Either kernel may also split the reduced range over blockIdx.y when there are too few outputs to
// fill the GPU; the partial results (in the accumulation type) are then combined by a second
// kernel, in a fixed order. Results are deterministic for a given shape and GPU, and differ from
// the CPU's pairwise sums only by rounding.
#include <algorithm>

#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/cuda/reduce_utils.cuh"

namespace mlr::cuda {

namespace {

// The rule of every reduction of tensor/op_table.h: a start value, how two partial results
// combine, and the result from the combined value and the element count. The switches below have
// one case per entry of the table, so an entry without its rule here does not compile.
template <ReduceOp op> struct ReduceRule;
template <> struct ReduceRule<ReduceOp::sum> {
  template <typename A> __device__ __forceinline__ static A init() { return A(0); }
  template <typename A> __device__ __forceinline__ static A combine(A x, A y) { return x + y; }
  template <typename O, typename A> __device__ __forceinline__ static O finish(A v, int64_t) { return convert<O>(v); }
};
template <> struct ReduceRule<ReduceOp::mean> {
  template <typename A> __device__ __forceinline__ static A init() { return A(0); }
  template <typename A> __device__ __forceinline__ static A combine(A x, A y) { return x + y; }
  template <typename O, typename A> __device__ __forceinline__ static O finish(A v, int64_t count) {
    if constexpr (std::is_floating_point_v<A>) return convert<O>(v / static_cast<A>(count));  // 0/0 = NaN
    else return convert<O>(v);  // the mean of integers is rejected on the host
  }
};
template <> struct ReduceRule<ReduceOp::amax> {
  template <typename A> __device__ __forceinline__ static A init() { return lowest_value<A>(); }
  template <typename A> __device__ __forceinline__ static A combine(A x, A y) { return nan_max(x, y); }
  template <typename O, typename A> __device__ __forceinline__ static O finish(A v, int64_t) { return convert<O>(v); }
};
template <> struct ReduceRule<ReduceOp::amin> {
  template <typename A> __device__ __forceinline__ static A init() { return highest_value<A>(); }
  template <typename A> __device__ __forceinline__ static A combine(A x, A y) { return nan_min(x, y); }
  template <typename O, typename A> __device__ __forceinline__ static O finish(A v, int64_t) { return convert<O>(v); }
};

template <typename A>
__device__ __forceinline__ A reduce_init(ReduceOp op) {
  switch (op) {
#define MLR_CUDA_CASE(name, ...) \
  case ReduceOp::name: return ReduceRule<ReduceOp::name>::template init<A>();
    MLR_REDUCE_OPS(MLR_CUDA_CASE)
#undef MLR_CUDA_CASE
  }
  return A(0);  // unreachable: one case per op of the table
}

template <typename A>
__device__ __forceinline__ A reduce_combine(ReduceOp op, A x, A y) {
  switch (op) {
#define MLR_CUDA_CASE(name, ...) \
  case ReduceOp::name: return ReduceRule<ReduceOp::name>::combine(x, y);
    MLR_REDUCE_OPS(MLR_CUDA_CASE)
#undef MLR_CUDA_CASE
  }
  return x;  // unreachable: one case per op of the table
}

template <typename O, typename A>
__device__ __forceinline__ O reduce_finish(ReduceOp op, A v, int64_t count) {
  switch (op) {
#define MLR_CUDA_CASE(name, ...) \
  case ReduceOp::name: return ReduceRule<ReduceOp::name>::template finish<O>(v, count);
    MLR_REDUCE_OPS(MLR_CUDA_CASE)
#undef MLR_CUDA_CASE
  }
  return O();  // unreachable: one case per op of the table
}

// One group of threads per output o; blockIdx.y selects the slice [r0, r1) of the reduced range.
// With gridDim.y == 1 the result is written to out[o], else the partial to partial[y * n_out + o].
template <typename T, typename O>
__global__ void reduce_rows_kernel(ReduceOp op, O* out, acc_t<T>* partial, const T* a, Strided<1> kept,
                                   Strided<1> red, int64_t n_out, int64_t count, int64_t slice, int group) {
  using A = acc_t<T>;
  MLR_SHARED(A, scratch, [32]);
  const int lane = threadIdx.x % group;
  const int64_t r0 = blockIdx.y * slice;
  const int64_t r1 = r0 + slice < count ? r0 + slice : count;
  for (int64_t o = row_first(group); o < n_out; o += row_step(group)) {
    int64_t base[1];
    kept.offsets(o, base);
    A acc = reduce_init<A>(op);
    for (int64_t r = r0 + lane; r < r1; r += group) {
      int64_t off[1];
      red.offsets(r, off);
      acc = reduce_combine(op, acc, load_as<A>(a[base[0] + off[0]]));
    }
    acc = group_reduce(acc, [op](A x, A y) { return reduce_combine(op, x, y); }, group, scratch);
    if (lane == 0) {
      if (gridDim.y == 1) out[o] = reduce_finish<O>(op, acc, count);
      else partial[blockIdx.y * n_out + o] = acc;
    }
  }
}

constexpr int kColOutputs = 32;  // outputs per block (threadIdx.x)
constexpr int kColLanes = 8;     // threads per output (threadIdx.y)

template <typename T, typename O>
__global__ void reduce_columns_kernel(ReduceOp op, O* out, acc_t<T>* partial, const T* a, Strided<1> kept,
                                      Strided<1> red, int64_t n_out, int64_t count) {
  using A = acc_t<T>;
  MLR_SHARED(A, part, [kColLanes][kColOutputs + 1]);
  const int64_t o = blockIdx.x * int64_t{kColOutputs} + threadIdx.x;
  A acc = reduce_init<A>(op);
  if (o < n_out) {
    int64_t base[1];
    kept.offsets(o, base);
    const int64_t step = int64_t{gridDim.y} * kColLanes;
    for (int64_t r = blockIdx.y * int64_t{kColLanes} + threadIdx.y; r < count; r += step) {
      int64_t off[1];
      red.offsets(r, off);
      acc = reduce_combine(op, acc, load_as<A>(a[base[0] + off[0]]));
    }
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && o < n_out) {
    for (int k = 1; k < kColLanes; ++k) acc = reduce_combine(op, acc, part[k][threadIdx.x]);
    if (gridDim.y == 1) out[o] = reduce_finish<O>(op, acc, count);
    else partial[blockIdx.y * n_out + o] = acc;
  }
}

// Combines the `slices` partials of each output in slice order.
template <typename A, typename O>
__global__ void reduce_finish_kernel(ReduceOp op, O* out, const A* partial, int64_t n_out, int64_t slices,
                                     int64_t count) {
  for (int64_t o = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; o < n_out; o += int64_t{gridDim.x} * blockDim.x) {
    A acc = partial[o];
    for (int64_t k = 1; k < slices; ++k) acc = reduce_combine(op, acc, partial[k * n_out + o]);
    out[o] = reduce_finish<O>(op, acc, count);
  }
}

struct Dim {
  int64_t size, stride;
};

std::vector<Dim> merge_dims(const std::vector<Dim>& dims) {
  std::vector<Dim> out;
  for (const Dim& d : dims) {
    if (!out.empty() && out.back().stride == d.stride * d.size) {
      out.back().size *= d.size;
      out.back().stride = d.stride;
    } else {
      out.push_back(d);
    }
  }
  return out;
}

Strided<1> strided_of(const std::vector<Dim>& dims, const char* op) {
  Shape sizes, strides;
  for (const Dim& d : dims) {
    sizes.push_back(d.size);
    strides.push_back(d.stride);
  }
  return make_strided<1>(sizes, {&strides}, op);
}

template <typename T, typename O>
void reduce_impl(ReduceOp op, const Tensor& out, const Tensor& a, const std::vector<bool>& mask,
                 cudaStream_t stream) {
  using A = acc_t<T>;
  std::vector<Dim> kept, red;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) == 1) continue;
    if (mask[d]) red.push_back({a.size(d), a.stride(d)});
    else kept.push_back({a.size(d), a.stride(d)});
  }
  int64_t n_out = 1, count = 1;
  for (const Dim& d : kept) n_out *= d.size;
  for (const Dim& d : red) count *= d.size;
  if (n_out == 0) return;
  MLR_CHECK(count > 0 || op_info(op).kind != ReduceKind::extremum,
            "reduce: {} over zero elements (shape {})", op_name(op), shape_str(a.shape()));
  std::stable_sort(red.begin(), red.end(), [](const Dim& x, const Dim& y) { return x.stride > y.stride; });
  red = merge_dims(red);
  kept = merge_dims(kept);
  const Strided<1> kept_idx = strided_of(kept, "reduce");
  const Strided<1> red_idx = strided_of(red, "reduce");
  int64_t kept_min = INT64_MAX;
  for (const Dim& d : kept) kept_min = std::min(kept_min, d.stride);
  const int64_t red_min = red.empty() ? INT64_MAX : red.back().stride;
  const bool columns = (!kept.empty() && kept_min < red_min) || count <= 16;

  const T* pa = static_cast<const T*>(a.data_ptr());
  O* po = static_cast<O*>(out.data_ptr());
  const int64_t sms = sm_count(out.device().index);
  const int64_t target_blocks = 4 * sms;
  int64_t slices = 1;
  Tensor partial;
  auto partial_ptr = [&]() -> A* {
    if (slices == 1) return nullptr;
    partial = empty({slices, n_out}, {dtype_of<A>::value, out.device()});
    return static_cast<A*>(partial.data_ptr());
  };

  if (columns) {
    const int64_t bx = (n_out + kColOutputs - 1) / kColOutputs;
    if (bx < target_blocks && count >= 64 * kColLanes)
      slices = std::min<int64_t>({(target_blocks + bx - 1) / bx, count / (8 * kColLanes), 65535});
    A* pp = partial_ptr();
    dim3 grid(static_cast<unsigned int>(bx), static_cast<unsigned int>(slices));
    MLR_CHECK(bx <= INT32_MAX, "reduce: {} outputs are too many for one launch", n_out);
    MLR_LAUNCH((grid, dim3(kColOutputs, kColLanes), 0, stream), reduce_columns_kernel<T, O>)(op, po, pp, pa, kept_idx, red_idx,
                                                                                   n_out, count);
    MLR_CUDA_CHECK_LAUNCH();
  } else {
    const RowLaunch l = row_launch(n_out, count, true);
    if (l.blocks < target_blocks && count >= 16384)
      slices = std::min<int64_t>({(target_blocks + l.blocks - 1) / l.blocks, count / 4096, 65535});
    A* pp = partial_ptr();
    const int64_t slice = (count + slices - 1) / slices;
    MLR_LAUNCH((dim3(l.blocks, static_cast<unsigned int>(slices)), l.threads, 0, stream), reduce_rows_kernel<T, O>)(
        op, po, pp, pa, kept_idx, red_idx, n_out, count, slice, l.group);
    MLR_CUDA_CHECK_LAUNCH();
  }
  if (slices > 1) {
    MLR_LAUNCH((blocks_for(n_out, 256), 256, 0, stream), reduce_finish_kernel<A, O>)(
        op, po, static_cast<const A*>(partial.data_ptr()), n_out, slices, count);
    MLR_CUDA_CHECK_LAUNCH();
  }
}

// Shape of a with dimension dim set to 1: the index space of "rows along dim".
Shape rows_shape(const Tensor& a, int64_t dim) {
  Shape s = a.shape();
  s[dim] = 1;
  return s;
}

// ---- argmax: (value, index) pairs; NaN beats everything, ties go to the smaller index ----
template <typename A>
struct ArgBest {
  A v;
  int64_t i;
};

template <typename A>
__device__ __forceinline__ ArgBest<A> shfl_xor(ArgBest<A> x, int lane_mask) {
  return {__shfl_xor_sync(0xffffffffu, x.v, lane_mask), __shfl_xor_sync(0xffffffffu, x.i, lane_mask)};
}

template <typename A>
__device__ __forceinline__ ArgBest<A> arg_better(ArgBest<A> x, ArgBest<A> y) {
  if (x.i < 0) return y;  // empty
  if (y.i < 0) return x;
  const bool xn = is_nan(x.v), yn = is_nan(y.v);
  if (xn || yn) {
    if (xn && yn) return x.i < y.i ? x : y;
    return xn ? x : y;
  }
  if (x.v > y.v) return x;
  if (y.v > x.v) return y;
  return x.i < y.i ? x : y;
}

template <typename T>
__global__ void argmax_kernel(int64_t* out, const T* a, Strided<2> rows_idx, int64_t rows, int64_t n, int64_t sa,
                              int group) {
  using A = acc_t<T>;
  MLR_SHARED(ArgBest<A>, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    int64_t off[2];
    rows_idx.offsets(r, off);
    ArgBest<A> best{A(0), -1};
    for (int64_t k = lane; k < n; k += group) best = arg_better(best, ArgBest<A>{load_as<A>(a[off[1] + k * sa]), k});
    best = group_reduce(best, [](ArgBest<A> x, ArgBest<A> y) { return arg_better(x, y); }, group, scratch);
    if (lane == 0) out[off[0]] = best.i;
  }
}

template <typename T>
__global__ void logsumexp_kernel(T* out, const T* a, Strided<2> rows_idx, int64_t rows, int64_t n, int64_t sa,
                                 int group) {
  using A = acc_t<T>;
  MLR_SHARED(MaxSum<A>, scratch, [32]);
  const int lane = threadIdx.x % group;
  for (int64_t r = row_first(group); r < rows; r += row_step(group)) {
    int64_t off[2];
    rows_idx.offsets(r, off);
    MaxSum<A> acc = maxsum_empty<A>();
    for (int64_t k = lane; k < n; k += group) acc = maxsum_add(acc, load_as<A>(a[off[1] + k * sa]));
    acc = group_reduce(acc, [](MaxSum<A> x, MaxSum<A> y) { return maxsum_merge(x, y); }, group, scratch);
    if (lane == 0) out[off[0]] = convert<T>(maxsum_lse(acc));
  }
}

template <typename F>
void visit_device(DType t, F&& f) {
  visit_dtype(t, [&](auto tag) { f(device_t<decltype(tag)>{}); });
}

}  // namespace

void reduce(ReduceOp op, const Tensor& out, const Tensor& a, const std::vector<bool>& reduce_mask) {
  MLR_CHECK(static_cast<int64_t>(reduce_mask.size()) == a.dim(), "reduce: mask has {} entries for a {}-d tensor",
            reduce_mask.size(), a.dim());
  MLR_CHECK(out.dim() == a.dim() && out.is_contiguous(),
            "reduce: output shape {} must be the contiguous keepdim layout of input shape {}", shape_str(out.shape()),
            shape_str(a.shape()));
  MLR_CHECK(out.device() == a.device(), "reduce: output on {} but input on {}", out.device().str(), a.device().str());
  for (int64_t d = 0; d < a.dim(); ++d)
    MLR_CHECK(out.size(d) == (reduce_mask[d] ? 1 : a.size(d)), "reduce: output shape {} does not fit input shape {}",
              shape_str(out.shape()), shape_str(a.shape()));
  if (out.numel() == 0) return;
  cudaStream_t stream = device_stream(out);
  visit_device(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    if (out.dtype() == a.dtype()) {
      reduce_impl<T, T>(op, out, a, reduce_mask, stream);
    } else {
      MLR_CHECK(out.dtype() == DType::i64 && !is_floating(a.dtype()),
                "reduce: output dtype {} for input dtype {} (expected the input's, or i64 for an integer sum)",
                out.dtype(), a.dtype());
      if constexpr (!std::is_floating_point_v<T> && !is_half_v<T>) reduce_impl<T, int64_t>(op, out, a, reduce_mask, stream);
    }
  });
}

void argmax(const Tensor& out, const Tensor& a, int64_t dim) {
  MLR_CHECK(dim >= 0 && dim < a.dim(), "argmax: dimension {} out of range for shape {}", dim, shape_str(a.shape()));
  MLR_CHECK(out.dtype() == DType::i64 && out.shape() == rows_shape(a, dim),
            "argmax: output ({} {}) must be i64 of shape {}", out.dtype(), shape_str(out.shape()),
            shape_str(rows_shape(a, dim)));
  MLR_CHECK(out.device() == a.device(), "argmax: output on {} but input on {}", out.device().str(), a.device().str());
  const int64_t n = a.size(dim), sa = a.stride(dim);
  MLR_CHECK(n > 0, "argmax: dimension {} of shape {} is empty", dim, shape_str(a.shape()));
  const int64_t rows = out.numel();
  if (rows == 0) return;
  cudaStream_t stream = device_stream(out);
  const Shape rs = rows_shape(a, dim);
  const Strided<2> idx = make_strided<2>(rs, {&out.strides(), &a.strides()}, "argmax");
  const RowLaunch l = row_launch(rows, n, sa == 1);
  visit_device(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((l.blocks, l.threads, 0, stream), argmax_kernel<T>)(out.data<int64_t>(), static_cast<const T*>(a.data_ptr()),
                                                        idx, rows, n, sa, l.group);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void logsumexp(const Tensor& out, const Tensor& a, int64_t dim) {
  MLR_CHECK(dim >= 0 && dim < a.dim(), "logsumexp: dimension {} out of range for shape {}", dim,
            shape_str(a.shape()));
  MLR_CHECK(out.dtype() == a.dtype() && out.shape() == rows_shape(a, dim),
            "logsumexp: output ({} {}) must be {} of shape {}", out.dtype(), shape_str(out.shape()), a.dtype(),
            shape_str(rows_shape(a, dim)));
  MLR_CHECK(out.device() == a.device(), "logsumexp: output on {} but input on {}", out.device().str(),
            a.device().str());
  const int64_t n = a.size(dim), sa = a.stride(dim);
  const int64_t rows = out.numel();
  if (rows == 0) return;
  cudaStream_t stream = device_stream(out);
  const Shape rs = rows_shape(a, dim);
  const Strided<2> idx = make_strided<2>(rs, {&out.strides(), &a.strides()}, "logsumexp");
  const RowLaunch l = row_launch(rows, n, sa == 1);
  visit_floating(a.dtype(), "logsumexp", [&](auto tag) {
    using T = device_t<decltype(tag)>;
    MLR_LAUNCH((l.blocks, l.threads, 0, stream), logsumexp_kernel<T>)(static_cast<T*>(out.data_ptr()),
                                                           static_cast<const T*>(a.data_ptr()), idx, rows, n, sa,
                                                           l.group);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

// Gather and scatter along one dimension (index values were range-checked by the front-end,
// tensor/ops_index.cpp):
//   embedding:          out[p, :] = weight[ids[p], :]                 (ids flattened to positions p)
//   embedding_backward: dweight[v, :] += sum over p with ids[p] == v of g[p, :]
//   index_select:       out.select(dim, i) = a.select(dim, index[i])
//   index_add:          out.select(dim, index[i]) += source.select(dim, i)
// Tensors are seen as [outer, size along dim, inner] after making them contiguous.
//
// The scatter-adds are deterministic and accumulate in f32 for 16-bit outputs, as the CPU reference,
// entirely on the device (no copy of the index to the host, no stream drain):
//   1. sort the positions by (index value, position): position i goes to slot
//        #{j : index[j] < index[i]} + #{j < i : index[j] == index[i]},
//      a strict total order, so every position gets its own slot whatever the thread timing
//      (n^2 comparisons, one thread per position: cheap for the few thousand ids of a batch);
//   2. one thread per (first slot of a destination, element) sums that destination's sources in
//      position order onto its old value, then rounds once.
// No atomics, so no run-to-run differences in gradients of the embedding table.
// The front-end checks index values only for CPU tensors or with debug checks (tensor/nn_ops.h);
// a kernel that meets an index outside its range anyway (a caller that skipped validation) never
// reads or writes out of bounds: a gathered row becomes NaN (0 for integer tensors), a scattered
// source is dropped.
#include <limits>
#include <type_traits>

#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"

namespace mlr::cuda {

namespace {

template <typename F>
void dispatch_all(DType t, F&& f) {
  visit_dtype(t, [&](auto tag) { f(device_t<decltype(tag)>{}); });
}

// The index as contiguous i64 on its device.
Tensor index_i64(const Tensor& index) {
  MLR_CHECK(index.dtype() == DType::i32 || index.dtype() == DType::i64,
            "index kernels: index dtype {} (expected i32 or i64)", index.dtype());
  return index.dtype() == DType::i64 ? index.contiguous() : index.to(DType::i64).contiguous();
}

// What a gather writes for an index outside the table.
template <typename T>
__device__ __forceinline__ T out_of_range_value() {
  if constexpr (std::is_integral_v<T>) return T(0);
  else return convert<T>(std::numeric_limits<float>::quiet_NaN());
}

// out[o, i, e] = a[o, index[i], e]; a contiguous [outer, a_dim, inner], out contiguous [outer, n, inner].
template <typename T>
__global__ void gather_kernel(T* out, const T* a, const int64_t* index, int64_t outer, int64_t n, int64_t inner,
                              int64_t a_dim) {
  const int64_t total = outer * n * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = k % inner, i = (k / inner) % n, o = k / (inner * n);
    const int64_t at = index[i];
    out[k] = at >= 0 && at < a_dim ? a[(o * a_dim + at) * inner + e] : out_of_range_value<T>();
  }
}

// Embedding rows may be a strided view of the table: out[p, j] = weight[ids[p] * s0 + j * s1].
template <typename T>
__global__ void embedding_kernel(T* out, const T* weight, const int64_t* ids, int64_t n, int64_t d, int64_t vocab,
                                 int64_t s0, int64_t s1) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * d; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = k / d, j = k % d, id = ids[p];
    out[k] = id >= 0 && id < vocab ? weight[id * s0 + j * s1] : out_of_range_value<T>();
  }
}

// order[slot(i)] = i with slot(i) = #{j : index[j] < index[i]} + #{j < i : index[j] == index[i]}:
// the positions sorted by (index value, position).
__global__ void sort_positions_kernel(int64_t* order, const int64_t* index, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = index[i];
    int64_t slot = 0;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t w = index[j];
      slot += (w < v || (w == v && j < i)) ? 1 : 0;
    }
    order[slot] = i;
  }
}

// For sorted slot s that starts the run of destination d = index[order[s]]:
//   out[o, d, e] += sum over the run's slots s' (in order) of source[o, order[s'], e].
template <typename T>
__global__ void segment_add_kernel(T* out, const T* source, const int64_t* index, const int64_t* order, int64_t outer,
                                   int64_t n, int64_t inner, int64_t out_dim, int64_t src_dim) {
  using A = acc_t<T>;
  const int64_t total = outer * n * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = k % inner, s = (k / inner) % n, o = k / (inner * n);
    const int64_t d = index[order[s]];
    if (s > 0 && index[order[s - 1]] == d) continue;  // not the first slot of its destination
    if (d < 0 || d >= out_dim) continue;
    T* dst = out + (o * out_dim + d) * inner + e;
    A acc = load_as<A>(*dst);
    for (int64_t r = s; r < n && index[order[r]] == d; ++r) acc += load_as<A>(source[(o * src_dim + order[r]) * inner + e]);
    *dst = convert<T>(acc);
  }
}

int64_t prod(const Shape& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t d = from; d < to; ++d) p *= s[d];
  return p;
}

}  // namespace

void embedding(const Tensor& out, const Tensor& weight, const Tensor& ids) {
  MLR_CHECK(out.is_contiguous(), "embedding (cuda kernel): out must be contiguous, got strides {}",
            shape_str(out.strides()));
  cudaStream_t stream = device_stream(out);
  const int64_t n = ids.numel(), d = weight.size(1);
  if (n * d == 0) return;
  const Tensor idx = index_i64(ids);
  constexpr int kThreads = 256;
  dispatch_all(weight.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((blocks_for(n * d, kThreads), kThreads, 0, stream), embedding_kernel<T>)(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(weight.data_ptr()),
        static_cast<const int64_t*>(idx.data_ptr()), n, d, weight.size(0), weight.stride(0), weight.stride(1));
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void embedding_backward(const Tensor& dweight, const Tensor& g, const Tensor& ids) {
  index_add(dweight, 0, ids.reshape({-1}), g.reshape({-1, dweight.size(1)}));
}

void index_select(const Tensor& out, const Tensor& a_in, int64_t dim, const Tensor& index) {
  MLR_CHECK(out.is_contiguous(), "index_select (cuda kernel): out must be contiguous, got strides {}",
            shape_str(out.strides()));
  cudaStream_t stream = device_stream(out);
  const Tensor a = a_in.contiguous();
  const Tensor idx = index_i64(index);
  const size_t dd = static_cast<size_t>(dim);
  const int64_t outer = prod(a.shape(), 0, dd), inner = prod(a.shape(), dd + 1, a.shape().size());
  const int64_t n = idx.numel(), total = outer * n * inner;
  if (total == 0) return;
  constexpr int kThreads = 256;
  dispatch_all(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((blocks_for(total, kThreads), kThreads, 0, stream), gather_kernel<T>)(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(a.data_ptr()),
        static_cast<const int64_t*>(idx.data_ptr()), outer, n, inner, a.size(dim));
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source_in) {
  MLR_CHECK(out.is_contiguous(), "index_add (cuda kernel): out must be contiguous, got strides {}",
            shape_str(out.strides()));
  cudaStream_t stream = device_stream(out);
  const Tensor source = source_in.contiguous();
  const Tensor idx = index_i64(index);
  const int64_t n = idx.numel(), out_dim = out.size(dim);
  const size_t dd = static_cast<size_t>(dim);
  const int64_t outer = prod(out.shape(), 0, dd), inner = prod(out.shape(), dd + 1, out.shape().size());
  const int64_t total = outer * n * inner;
  if (total == 0) return;
  const Tensor order = empty({n}, {DType::i64, out.device()});
  constexpr int kThreads = 256;
  MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), sort_positions_kernel)(
      static_cast<int64_t*>(order.data_ptr()), static_cast<const int64_t*>(idx.data_ptr()), n);
  MLR_CUDA_CHECK_LAUNCH();
  dispatch_all(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((blocks_for(total, kThreads), kThreads, 0, stream), segment_add_kernel<T>)(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(source.data_ptr()),
        static_cast<const int64_t*>(idx.data_ptr()), static_cast<const int64_t*>(order.data_ptr()), outer, n, inner,
        out_dim, source.size(dim));
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

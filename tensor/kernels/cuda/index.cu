// Gather and scatter along one dimension (index values were range-checked by the front-end,
// tensor/ops_index.cpp):
//   embedding:          out[p, :] = weight[ids[p], :]                 (ids flattened to positions p)
//   embedding_backward: dweight[v, :] += sum over p with ids[p] == v of g[p, :]
//   index_select:       out.select(dim, i) = a.select(dim, index[i])
//   index_add:          out.select(dim, index[i]) += source.select(dim, i)
// Tensors are seen as [outer, size along dim, inner] after making them contiguous.
//
// The scatter-adds are deterministic and accumulate in f32 for 16-bit outputs, as the CPU reference:
// the host groups the positions by destination (a counting sort of the index, which the front-end
// has already copied to the host for its range check), and one thread per destination element sums
// its sources in index order, then rounds once. No atomics, so no run-to-run differences in
// gradients of the embedding table.
#include <vector>

#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"

namespace mlr::cuda {

namespace {

template <typename F>
void dispatch_all(DType t, F&& f) {
  visit_dtype(t, [&](auto tag) { f(device_t<decltype(tag)>{}); });
}

std::vector<int64_t> host_indices(const Tensor& index) {
  MLR_CHECK(index.dtype() == DType::i32 || index.dtype() == DType::i64,
            "index kernels: index dtype {} (expected i32 or i64)", index.dtype());
  return index.to_vector<int64_t>();  // to_vector converts i32 as well
}

Tensor upload(const std::vector<int64_t>& v, Device device) {
  return from_vector<int64_t>(v, {static_cast<int64_t>(v.size())}).to(device);
}

// out[o, i, e] = a[o, index[i], e]; a contiguous [outer, a_dim, inner], out contiguous [outer, n, inner].
template <typename T>
__global__ void gather_kernel(T* out, const T* a, const int64_t* index, int64_t outer, int64_t n, int64_t inner,
                              int64_t a_dim) {
  const int64_t total = outer * n * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = k % inner, i = (k / inner) % n, o = k / (inner * n);
    out[k] = a[(o * a_dim + index[i]) * inner + e];
  }
}

// Embedding rows may be a strided view of the table: out[p, j] = weight[ids[p] * s0 + j * s1].
template <typename T>
__global__ void embedding_kernel(T* out, const T* weight, const int64_t* ids, int64_t n, int64_t d, int64_t s0,
                                 int64_t s1) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * d; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = k / d, j = k % d;
    out[k] = weight[ids[p] * s0 + j * s1];
  }
}

// out[o, targets[t], e] += sum_{j in [begin[t], begin[t+1])} source[o, order[j], e], in j order.
template <typename T>
__global__ void scatter_add_kernel(T* out, const T* source, const int64_t* targets, const int64_t* begin,
                                   const int64_t* order, int64_t outer, int64_t nt, int64_t inner, int64_t out_dim,
                                   int64_t src_dim) {
  using A = acc_t<T>;
  const int64_t total = outer * nt * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t e = k % inner, t = (k / inner) % nt, o = k / (inner * nt);
    T* dst = out + (o * out_dim + targets[t]) * inner + e;
    A acc = load_as<A>(*dst);
    for (int64_t j = begin[t]; j < begin[t + 1]; ++j) acc += load_as<A>(source[(o * src_dim + order[j]) * inner + e]);
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
  const Tensor idx = ids.dtype() == DType::i64 ? ids.contiguous() : ids.to(DType::i64).contiguous();
  constexpr int kThreads = 256;
  dispatch_all(weight.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((blocks_for(n * d, kThreads), kThreads, 0, stream), embedding_kernel<T>)(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(weight.data_ptr()),
        static_cast<const int64_t*>(idx.data_ptr()), n, d, weight.stride(0), weight.stride(1));
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
  const Tensor idx = index.dtype() == DType::i64 ? index.contiguous() : index.to(DType::i64).contiguous();
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
  const std::vector<int64_t> idx = host_indices(index);
  const int64_t n = static_cast<int64_t>(idx.size()), out_dim = out.size(dim);
  // Counting sort by destination: the sources of destination v are order[first[v] .. first[v + 1]).
  std::vector<int64_t> first(out_dim + 1, 0), order(n);
  for (int64_t i = 0; i < n; ++i) ++first[idx[i] + 1];
  for (int64_t v = 0; v < out_dim; ++v) first[v + 1] += first[v];
  std::vector<int64_t> fill_at(first.begin(), first.end() - 1);
  for (int64_t i = 0; i < n; ++i) order[fill_at[idx[i]]++] = i;
  std::vector<int64_t> targets, begin;  // destinations that receive something, and their ranges
  for (int64_t v = 0; v < out_dim; ++v) {
    if (first[v + 1] > first[v]) {
      targets.push_back(v);
      begin.push_back(first[v]);
    }
  }
  begin.push_back(n);
  const int64_t nt = static_cast<int64_t>(targets.size());
  const size_t dd = static_cast<size_t>(dim);
  const int64_t outer = prod(out.shape(), 0, dd), inner = prod(out.shape(), dd + 1, out.shape().size());
  const int64_t total = outer * nt * inner;
  if (total == 0) return;
  const Tensor targets_d = upload(targets, out.device()), begin_d = upload(begin, out.device()),
               order_d = upload(order, out.device());
  constexpr int kThreads = 256;
  dispatch_all(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((blocks_for(total, kThreads), kThreads, 0, stream), scatter_add_kernel<T>)(
        static_cast<T*>(out.data_ptr()), static_cast<const T*>(source.data_ptr()),
        static_cast<const int64_t*>(targets_d.data_ptr()), static_cast<const int64_t*>(begin_d.data_ptr()),
        static_cast<const int64_t*>(order_d.data_ptr()), outer, nt, inner, out_dim, source.size(dim));
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

// Gather and scatter along one dimension. Index values were checked by the front-end
// (tensor/ops_index.cpp); the kernels trust them.
//
//   embedding:          out[p, :] = weight[ids[p], :]                 (ids flattened to positions p)
//   embedding_backward: dweight[v, :] += sum over p with ids[p] == v of g[p, :]
//   index_select:       out.select(dim, i) = a.select(dim, index[i])
//   index_add:          out.select(dim, index[i]) += source.select(dim, i)
//
// The scatter-adds are deterministic: positions are grouped by destination (a counting sort), and
// each destination sums its sources in index order, whatever the number of threads. 16-bit outputs
// accumulate in f32 and are rounded once.
#include <omp.h>

#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/loops.h"

namespace mlr::cpu {

namespace {

std::vector<int64_t> read_indices(const Tensor& index) {
  if (index.dtype() == DType::i32) {
    std::vector<int32_t> v = index.to_vector<int32_t>();
    return std::vector<int64_t>(v.begin(), v.end());
  }
  MLR_CHECK(index.dtype() == DType::i64, "index kernels: index dtype {} (expected i32 or i64)", index.dtype());
  return index.to_vector<int64_t>();
}

// dst += src elementwise (same shape, any strides); dst's type may be wider than src's.
template <typename D, typename S>
void accumulate(const Tensor& dst, const Tensor& src) {
  D* pd = static_cast<D*>(dst.data_ptr());
  const S* ps = static_cast<const S*>(src.data_ptr());
  strided_loop<2>(dst.shape(), {&dst.strides(), &src.strides()},
                  [&](const std::array<int64_t, 2>& o, const std::array<int64_t, 2>& st, int64_t n) {
                    D* d = pd + o[0];
                    const S* s = ps + o[1];
                    for (int64_t i = 0; i < n; ++i)
                      d[i * st[0]] = static_cast<D>(d[i * st[0]] + static_cast<D>(s[i * st[1]]));
                  });
}

}  // namespace

void embedding(const Tensor& out, const Tensor& weight, const Tensor& ids) {
  const int64_t n = ids.numel(), d = weight.size(1);
  MLR_CHECK(out.is_contiguous() && out.numel() == n * d && out.dtype() == weight.dtype(),
            "embedding (cpu kernel): out {} ({}) must be contiguous with {} x {} elements of {}", shape_str(out.shape()),
            out.dtype(), n, d, weight.dtype());
  const std::vector<int64_t> idx = read_indices(ids);
  visit_dtype(weight.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* w = static_cast<const T*>(weight.data_ptr());
    T* o = static_cast<T*>(out.data_ptr());
    const int64_t s0 = weight.stride(0), s1 = weight.stride(1);
#pragma omp parallel for schedule(static) if (n * d >= 32768)
    for (int64_t p = 0; p < n; ++p) {
      const T* row = w + idx[p] * s0;
      T* dst = o + p * d;
      for (int64_t j = 0; j < d; ++j) dst[j] = row[j * s1];
    }
  });
}

void embedding_backward(const Tensor& dweight, const Tensor& g, const Tensor& ids) {
  const int64_t d = dweight.size(1);
  index_add(dweight, 0, ids.reshape({-1}), g.reshape({-1, d}));
}

void index_select(const Tensor& out, const Tensor& a, int64_t dim, const Tensor& index) {
  const std::vector<int64_t> idx = read_indices(index);
  const int64_t n = static_cast<int64_t>(idx.size());
  // Many small slices: one thread per slice. Few large slices: the copy itself is parallel.
  const bool per_slice = n >= 4 * omp_get_max_threads();
#pragma omp parallel for schedule(static) if (per_slice)
  for (int64_t i = 0; i < n; ++i) copy(out.select(dim, i), a.select(dim, idx[i]));
}

void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source) {
  const std::vector<int64_t> idx = read_indices(index);
  const int64_t n = static_cast<int64_t>(idx.size()), dst_size = out.size(dim);
  // Counting sort of the positions by destination: sources of destination v are
  // order[begin[v] .. begin[v + 1]), in index order.
  std::vector<int64_t> begin(dst_size + 1, 0), order(n);
  for (int64_t i = 0; i < n; ++i) ++begin[idx[i] + 1];
  for (int64_t v = 0; v < dst_size; ++v) begin[v + 1] += begin[v];
  std::vector<int64_t> fill_at(begin.begin(), begin.end() - 1);
  for (int64_t i = 0; i < n; ++i) order[fill_at[idx[i]]++] = i;
  std::vector<int64_t> targets;
  for (int64_t v = 0; v < dst_size; ++v)
    if (begin[v + 1] > begin[v]) targets.push_back(v);
  const int64_t nt = static_cast<int64_t>(targets.size());
  const bool per_slice = nt >= 4 * omp_get_max_threads();

  visit_dtype(out.dtype(), [&](auto tag) {
    using T = decltype(tag);
    using Acc = compute_t<T>;
#pragma omp parallel if (per_slice)
    {
      // 16-bit: each thread sums a destination slice in an f32 scratch and rounds it once.
      Tensor scratch;
      if constexpr (!std::is_same_v<Acc, T>) {
        Shape slice = out.shape();
        slice.erase(slice.begin() + dim);
        scratch = empty(slice, dtype_of<Acc>::value);
      }
#pragma omp for schedule(dynamic, 16)
      for (int64_t t = 0; t < nt; ++t) {
        const int64_t v = targets[t];
        Tensor dst = out.select(dim, v);
        if constexpr (std::is_same_v<Acc, T>) {
          for (int64_t j = begin[v]; j < begin[v + 1]; ++j) accumulate<T, T>(dst, source.select(dim, order[j]));
        } else {
          copy(scratch, dst);
          for (int64_t j = begin[v]; j < begin[v + 1]; ++j) accumulate<Acc, T>(scratch, source.select(dim, order[j]));
          copy(dst, scratch);
        }
      }
    }
  });
}

}  // namespace mlr::cpu

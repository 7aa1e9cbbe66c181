// Strided iteration for CPU kernels. strided_loop walks an N-operand index space of `shape`,
// operand k with element strides strides[k]; dimensions that are contiguous for every operand
// are merged first, so the common case is one long unit-stride loop. The callback receives the
// element offsets of the first element of an inner run, the inner strides and the run length,
// and writes its own (vectorisable) inner loop. The outer index space is split over OpenMP threads
// when the work is large enough.
#pragma once

#include <omp.h>

#include <array>
#include <cstdint>
#include <vector>

#include "tensor/tensor.h"

namespace mlr::cpu {

template <size_t N>
struct LoopShape {
  std::vector<int64_t> sizes;                      // merged sizes, innermost last
  std::array<std::vector<int64_t>, N> strides;     // per operand, merged
};

template <size_t N>
LoopShape<N> merge_dims(const Shape& shape, const std::array<const Shape*, N>& strides) {
  LoopShape<N> out;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;  // size-1 dims contribute nothing
    bool merge = !out.sizes.empty();
    for (size_t k = 0; k < N && merge; ++k)
      merge = out.strides[k].back() == (*strides[k])[d] * shape[d];
    if (merge) {
      out.sizes.back() *= shape[d];
      for (size_t k = 0; k < N; ++k) out.strides[k].back() = (*strides[k])[d];
    } else {
      out.sizes.push_back(shape[d]);
      for (size_t k = 0; k < N; ++k) out.strides[k].push_back((*strides[k])[d]);
    }
  }
  if (out.sizes.empty()) {  // a scalar or all-ones shape: one element
    out.sizes.push_back(1);
    for (size_t k = 0; k < N; ++k) out.strides[k].push_back(0);
  }
  return out;
}

// f(const std::array<int64_t, N>& offsets, const std::array<int64_t, N>& inner_strides, int64_t n)
template <size_t N, typename F>
void strided_loop(const Shape& shape, const std::array<const Shape*, N>& strides, F&& f,
                  int64_t min_parallel_elements = 32768) {
  LoopShape<N> ls = merge_dims<N>(shape, strides);
  const int64_t ndim = static_cast<int64_t>(ls.sizes.size());
  const int64_t inner = ls.sizes.back();
  int64_t outer = 1;
  for (int64_t d = 0; d + 1 < ndim; ++d) outer *= ls.sizes[d];
  if (outer * inner == 0) return;
  std::array<int64_t, N> inner_strides;
  for (size_t k = 0; k < N; ++k) inner_strides[k] = ls.strides[k].back();

  auto run_rows = [&](int64_t row_begin, int64_t row_end) {
    // decompose row_begin into an index over the outer dims, then step like an odometer
    std::vector<int64_t> idx(static_cast<size_t>(ndim > 1 ? ndim - 1 : 0), 0);
    int64_t r = row_begin;
    for (int64_t d = ndim - 2; d >= 0; --d) {
      idx[d] = r % ls.sizes[d];
      r /= ls.sizes[d];
    }
    std::array<int64_t, N> offs{};
    for (size_t k = 0; k < N; ++k)
      for (int64_t d = 0; d + 1 < ndim; ++d) offs[k] += idx[d] * ls.strides[k][d];
    for (int64_t row = row_begin; row < row_end; ++row) {
      f(offs, inner_strides, inner);
      for (int64_t d = ndim - 2; d >= 0; --d) {  // advance the odometer
        ++idx[d];
        for (size_t k = 0; k < N; ++k) offs[k] += ls.strides[k][d];
        if (idx[d] < ls.sizes[d]) break;
        for (size_t k = 0; k < N; ++k) offs[k] -= ls.strides[k][d] * ls.sizes[d];
        idx[d] = 0;
      }
    }
  };

  const int64_t total = outer * inner;
  if (total < min_parallel_elements || omp_get_max_threads() == 1 || omp_in_parallel()) {
    if (outer == 1) {
      f(std::array<int64_t, N>{}, inner_strides, inner);
    } else {
      run_rows(0, outer);
    }
    return;
  }
  if (outer == 1) {  // one long run: split it
#pragma omp parallel
    {
      int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
      int64_t begin = inner * t / nt, end = inner * (t + 1) / nt;
      std::array<int64_t, N> offs;
      for (size_t k = 0; k < N; ++k) offs[k] = begin * inner_strides[k];
      if (end > begin) f(offs, inner_strides, end - begin);
    }
    return;
  }
#pragma omp parallel
  {
    int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t begin = outer * t / nt, end = outer * (t + 1) / nt;
    if (end > begin) run_rows(begin, end);
  }
}

}  // namespace mlr::cpu

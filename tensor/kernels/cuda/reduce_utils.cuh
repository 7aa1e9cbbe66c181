// Pieces shared by the row-wise kernels (reductions along one dimension, softmax, cross-entropy):
// NaN-propagating max/min, the running (max, sum of exponentials) pair of an online log-sum-exp,
// and the launch geometry of "one group of threads per row".
#pragma once

#include <cmath>
#include <limits>

#include "tensor/kernels/cuda/cuda_utils.cuh"

namespace mlr::cuda {

template <typename A>
__host__ __device__ __forceinline__ A lowest_value() {
  if constexpr (std::is_floating_point_v<A>) return -std::numeric_limits<A>::infinity();
  else return std::numeric_limits<A>::lowest();
}
template <typename A>
__host__ __device__ __forceinline__ A highest_value() {
  if constexpr (std::is_floating_point_v<A>) return std::numeric_limits<A>::infinity();
  else return std::numeric_limits<A>::max();
}

// Max / min that let a NaN win, whichever side it is on (as torch and the CPU kernels).
template <typename A>
__device__ __forceinline__ A nan_max(A m, A x) {
  return (x > m || is_nan(x)) && !is_nan(m) ? x : m;
}
template <typename A>
__device__ __forceinline__ A nan_min(A m, A x) {
  return (x < m || is_nan(x)) && !is_nan(m) ? x : m;
}

__device__ __forceinline__ float m_exp_(float x) { return expf(x); }
__device__ __forceinline__ double m_exp_(double x) { return exp(x); }
__device__ __forceinline__ float m_log_(float x) { return logf(x); }
__device__ __forceinline__ double m_log_(double x) { return log(x); }

// Online log-sum-exp state of a set of values: m = max, s = sum exp(x - m). Merging two states
// rescales both sums to the larger max. A state of only -inf values is (-inf, 0); a NaN makes m
// NaN and so everything derived from it NaN.
template <typename A>
struct MaxSum {
  A m, s;
};

template <typename A>
__device__ __forceinline__ MaxSum<A> maxsum_empty() {
  return {-std::numeric_limits<A>::infinity(), A(0)};
}

template <typename A>
__device__ __forceinline__ MaxSum<A> maxsum_merge(MaxSum<A> a, MaxSum<A> b) {
  const A m = nan_max(a.m, b.m);
  if (m == -std::numeric_limits<A>::infinity()) return {m, A(0)};
  return {m, a.s * m_exp_(a.m - m) + b.s * m_exp_(b.m - m)};
}

template <typename A>
__device__ __forceinline__ MaxSum<A> maxsum_add(MaxSum<A> a, A x) {
  return maxsum_merge(a, MaxSum<A>{x, A(1)});
}

template <typename A>
__device__ __forceinline__ MaxSum<A> shfl_xor(MaxSum<A> v, int lane_mask) {
  return {__shfl_xor_sync(0xffffffffu, v.m, lane_mask), __shfl_xor_sync(0xffffffffu, v.s, lane_mask)};
}

// log(sum exp(x)) of a finished state: an infinite or NaN max is the answer itself (all -inf gives
// -inf, any +inf gives +inf), as the CPU kernel.
template <typename A>
__device__ __forceinline__ A maxsum_lse(MaxSum<A> v) {
  if (is_nan(v.m) || v.m == std::numeric_limits<A>::infinity() || v.m == -std::numeric_limits<A>::infinity())
    return v.m;
  return v.m + m_log_(v.s);
}

// Launch geometry of a row kernel: `group` threads per row (1, 32 or the whole block), rows split
// over a grid-stride loop.
struct RowLaunch {
  int group;
  int threads;
  unsigned int blocks;
};

inline RowLaunch row_launch(int64_t rows, int64_t n, bool contiguous_rows) {
  constexpr int kThreads = 256;
  const int group = row_group_size(n, contiguous_rows, kThreads);
  const int64_t rows_per_block = kThreads / group;
  int64_t blocks = (rows + rows_per_block - 1) / rows_per_block;
  blocks = blocks < 1 ? 1 : (blocks > 65535LL * 64 ? 65535LL * 64 : blocks);
  return {group, kThreads, static_cast<unsigned int>(blocks)};
}

// Row index of this thread's group and the step of the grid-stride loop over rows.
__device__ __forceinline__ int64_t row_first(int group) {
  return blockIdx.x * int64_t(blockDim.x / group) + threadIdx.x / group;
}
__device__ __forceinline__ int64_t row_step(int group) { return int64_t(gridDim.x) * (blockDim.x / group); }

}  // namespace mlr::cuda

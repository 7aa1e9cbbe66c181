// Small f32 matrix products on tiles in cache (attention's blocks of 64 queries x 64 keys x d):
//   C (= or +=) A B,   A(i, k) = a[i*a_rs + k*a_cs],  B(k, j) = b[k*b_rs + j*b_cs],  C row-major (ldc)
// Strides make transposed operands free. A is packed into panels of MR rows and B into panels of
// NR = 2 vectors of columns (zero-padded at the edges), then an MR x NR register tile accumulates
// over all of K: MR * 2 vector accumulators, one broadcast of A and two loads of B per k. The sum
// over k runs in order k = 0, 1, ... for every element, so results do not depend on the level's
// tile sizes beyond the FMA contraction the level allows.
// Instantiated per SimdLevel inside a target-specific function (tensor/kernels/cpu/simd.h).
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "tensor/kernels/cpu/simd.h"

namespace mlr::cpu {

template <SimdLevel L>
struct TileShape {
  static constexpr int W = kVecWidth<L>;
  static constexpr int MR = L == SimdLevel::avx512 ? 8 : L == SimdLevel::avx2 ? 6 : 4;
  static constexpr int NR = 2 * W;
};

// Packing buffers, reused across calls by one thread.
struct TileScratch {
  std::vector<float> a, b, c;
};

template <SimdLevel L>
MLR_ALWAYS_INLINE void tile_kernel(int64_t K, const float* ap, const float* bp, float* ct) {
  constexpr int W = TileShape<L>::W, MR = TileShape<L>::MR, NR = TileShape<L>::NR;
  Vec<W> c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    c0[r] = Vec<W>{};
    c1[r] = Vec<W>{};
  }
  for (int64_t k = 0; k < K; ++k) {
    const Vec<W> b0 = load<W>(bp + k * NR), b1 = load<W>(bp + k * NR + W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const float av = ap[k * MR + r];
      c0[r] += b0 * av;
      c1[r] += b1 * av;
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    store<W>(ct + r * NR, c0[r]);
    store<W>(ct + r * NR + W, c1[r]);
  }
}

template <SimdLevel L>
MLR_ALWAYS_INLINE void tile_gemm(int64_t M, int64_t N, int64_t K, const float* a, int64_t a_rs, int64_t a_cs,
                                 const float* b, int64_t b_rs, int64_t b_cs, float* c, int64_t ldc, bool accumulate,
                                 TileScratch& s) {
  constexpr int MR = TileShape<L>::MR, NR = TileShape<L>::NR;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(c + i * ldc, c + i * ldc + N, 0.0f);
    return;
  }
  const int64_t m_panels = (M + MR - 1) / MR, n_panels = (N + NR - 1) / NR;
  s.a.resize(static_cast<size_t>(m_panels * K * MR));
  s.b.resize(static_cast<size_t>(n_panels * K * NR));
  s.c.resize(static_cast<size_t>(MR * NR));
  float* pa = s.a.data();
  float* pb = s.b.data();
  float* ct = s.c.data();
  for (int64_t p = 0; p < n_panels; ++p) {
    const int64_t j0 = p * NR, nj = std::min<int64_t>(NR, N - j0);
    float* dst = pb + p * K * NR;
    for (int64_t k = 0; k < K; ++k) {
      const float* src = b + k * b_rs + j0 * b_cs;
      float* row = dst + k * NR;
      if (b_cs == 1) {
        for (int64_t j = 0; j < nj; ++j) row[j] = src[j];
      } else {
        for (int64_t j = 0; j < nj; ++j) row[j] = src[j * b_cs];
      }
      for (int64_t j = nj; j < NR; ++j) row[j] = 0.0f;
    }
  }
  for (int64_t p = 0; p < m_panels; ++p) {
    const int64_t i0 = p * MR, ni = std::min<int64_t>(MR, M - i0);
    float* dst = pa + p * K * MR;
    for (int64_t k = 0; k < K; ++k) {
      const float* src = a + i0 * a_rs + k * a_cs;
      float* col = dst + k * MR;
      for (int64_t r = 0; r < ni; ++r) col[r] = src[r * a_rs];
      for (int64_t r = ni; r < MR; ++r) col[r] = 0.0f;
    }
  }
  for (int64_t pi = 0; pi < m_panels; ++pi) {
    const int64_t i0 = pi * MR, ni = std::min<int64_t>(MR, M - i0);
    for (int64_t pj = 0; pj < n_panels; ++pj) {
      const int64_t j0 = pj * NR, nj = std::min<int64_t>(NR, N - j0);
      tile_kernel<L>(K, pa + pi * K * MR, pb + pj * K * NR, ct);
      for (int64_t r = 0; r < ni; ++r) {
        float* crow = c + (i0 + r) * ldc + j0;
        const float* trow = ct + r * NR;
        if (accumulate) {
          for (int64_t j = 0; j < nj; ++j) crow[j] += trow[j];
        } else {
          for (int64_t j = 0; j < nj; ++j) crow[j] = trow[j];
        }
      }
    }
  }
}

}  // namespace mlr::cpu

// Causal attention on tensor cores, in the flash-attention manner (forward and backward side by
// side): bf16 or f16 inputs, f32 accumulation, head dims 64 and 128, grouped-query heads, packed
// documents through cu_seqlens, sm_80 and newer. The math and the layouts are those of
// attention.cu (q [B, S, H, D], k and v [B, S, Hkv, D], lse [B, H, S] in f32); that file's
// warp-per-row kernel is the exact reference this one is tested against, and serves every case
// this one does not (f32, f64, other head dims, misaligned pointers).
//
// Tiling. A CTA of 4 warps owns a tile of rows; each warp owns 16 of them and works with the
// mma.sync.m16n8k16 instruction, whose operand fragments are (g = lane / 4, t = lane % 4):
//   A (16 x 16, row-major): registers {A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}
//   B (16 x 8, k x n):      registers {B[2t..2t+1][g], B[2t+8..2t+9][g]}
//   C (16 x 8, f32):        {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}
// Two neighbouring C tiles of a score row block are exactly the A fragment of the next product, so
// probabilities never leave registers. A B operand whose k runs along a row of a shared-memory tile
// (K in Q K^T) is one 32-bit load; one whose k runs down the rows (V in P V) is packed from two
// 16-bit loads.
//
// Forward (grid: query tiles of 64 x batch*heads, the latter over grid.y and grid.z): online softmax
// in base 2 over key tiles of KT (64; 32 on a device whose shared memory per block is too small for
// 64: arch_limits.h), which are double-buffered in shared memory with cp.async; masking only on the
// tiles that touch the diagonal or a document start.
// Backward: Dsum_i = dO_i . O_i first; then dK, dV with a CTA per key tile of 64 looping over the
// query tiles (of 32) of every query head of its group, recomputing P^T = exp(K Q^T - lse); then dQ
// with a CTA per query tile of 64 looping over key tiles. Each gradient is written once by one
// CTA: no atomics, deterministic.
//
// This header holds the kernels; attention_flash.cu launches them.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "tensor/kernels/cuda/arch_limits.h"
#include "tensor/kernels/cuda/attention_documents.cuh"
#include "tensor/kernels/cuda/cuda_utils.cuh"

// CPU tests run these kernels under tensor/kernels/cuda/emulator.h, which defines MLR_CUDA_EMULATION and
// provides the warp-level primitives; everything else is the same source.

namespace mlr::cuda {

namespace {

// Tile sizes and shared-memory budgets: arch_limits.h (flash::), which the runtime and the CI check
// of ptxas's resource usage read too. Forward and dQ take their key tile (keys per inner step) as
// the template argument KT: 64, or 32 where a block's shared memory is 99 KB.
constexpr int kWarps = flash::kWarps;
constexpr int kThreads = flash::kThreads;
constexpr int kTileRows = flash::kTileRows;    // rows owned by a CTA: 16 per warp
constexpr int kQueryTile = flash::kQueryTile;  // queries per inner step (dk, dv)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

struct Geometry {
  int64_t batch, seq, heads, kv_heads;
  const int32_t* cu;  // cumulative document lengths (nullptr: one document per row)
  int64_t docs;       // entries of cu minus one
};

// The grid's (y, z) plane enumerates batch x heads (or batch x kv heads for dK/dV): y up to 65,535,
// z for the rest, so any batch x heads launches. Blocks past the end exit at once.
__device__ __forceinline__ int64_t batch_head_of_block() { return int64_t(blockIdx.z) * gridDim.y + blockIdx.y; }

__device__ __forceinline__ void document_of(const Geometry& g, int64_t i, int64_t& start, int64_t& end) {
  document_bounds(g.cu, g.docs, g.seq, i, start, end);
}

// ---- tensor-core and copy primitives ----

template <typename T>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
#elif defined(MLR_CUDA_EMULATION)
  ::mlr::cuda_emulation::mma16816<T>(d, a, b0, b1);
#else
  __trap();  // the host refuses devices below sm_80 before launching
#endif
}

// Two f32 values rounded to T, `lo` in the low half (the lower column of a fragment pair).
template <typename T>
__device__ __forceinline__ uint32_t pack_rounded(float lo, float hi) {
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    memcpy(&r, &v, 4);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    memcpy(&r, &v, 4);
  }
  return r;
}

// Two neighbouring elements of a shared-memory row (p 4-byte aligned).
template <typename T>
__device__ __forceinline__ uint32_t load_pair(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

// Two elements from different rows (lo, hi) packed as one fragment register.
template <typename T>
__device__ __forceinline__ uint32_t pack_pair(const T* lo, const T* hi) {
  const uint16_t l = *reinterpret_cast<const uint16_t*>(lo), h = *reinterpret_cast<const uint16_t*>(hi);
  return uint32_t(l) | (uint32_t(h) << 16);
}

// 16 bytes global -> shared, asynchronously; zero-filled when !valid (src then is not read).
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes));
#elif defined(MLR_CUDA_EMULATION)
  ::mlr::cuda_emulation::copy16(smem, gmem, valid);
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#elif defined(MLR_CUDA_EMULATION)
  ::mlr::cuda_emulation::async_commit();
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#elif defined(MLR_CUDA_EMULATION)
  ::mlr::cuda_emulation::async_wait(N);
#endif
}

// Padded shared-memory row: 8 extra elements shift consecutive rows by 4 banks, so the fragment
// loads of a warp (8 rows x 4 column pairs) hit 32 different banks.
template <int D> constexpr int kStride = D + 8;

// Starts copying rows [r0, r0 + ROWS) of head `head` of a [B, S, heads, D] tensor (batch b) into a
// shared tile of ROWS x kStride; rows at or past S are zero-filled.
template <int ROWS, int D, typename T>
__device__ __forceinline__ void load_tile_async(T* tile, const T* src, int64_t b, int64_t r0, int64_t head,
                                                int64_t heads, int64_t seq) {
  constexpr int kChunksPerRow = D / 8;
  for (int c = threadIdx.x; c < ROWS * kChunksPerRow; c += kThreads) {
    const int row = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
    const int64_t r = r0 + row;
    const bool valid = r < seq;
    const T* from = valid ? src + ((b * seq + r) * heads + head) * D + col : src;
    cp_async16(tile + row * kStride<D> + col, from, valid);
  }
}

// A fragment of rows [row0, row0 + 16), columns [col0, col0 + 16) of a shared tile.
template <int D, typename T>
__device__ __forceinline__ void load_a(uint32_t (&a)[4], const T* tile, int row0, int col0, int g, int t) {
  const T* p = tile + (row0 + g) * kStride<D> + col0 + 2 * t;
  a[0] = load_pair(p);
  a[1] = load_pair(p + 8 * kStride<D>);
  a[2] = load_pair(p + 8);
  a[3] = load_pair(p + 8 * kStride<D> + 8);
}

// acc[n] += A(16 x D, rows row0.. of tile `a_tile`) x (rows n*8.. of `b_tile`)^T: products whose B
// operand is a row-major tile read along its rows (Q K^T, dO V^T, K Q^T, V dO^T).
template <int D, int NT, typename T>
__device__ __forceinline__ void gemm_abt(float (&acc)[NT][4], const T* a_tile, int row0, const T* b_tile, int g,
                                         int t) {
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    load_a<D>(a, a_tile, row0, kk * 16, g, t);
#pragma unroll
    for (int n = 0; n < NT; ++n) {
      const T* p = b_tile + (n * 8 + g) * kStride<D> + kk * 16 + 2 * t;
      mma16816<T>(acc[n], a, load_pair(p), load_pair(p + 8));
    }
  }
}

// acc[d] += P (16 x 8*NP, in C fragments, rounded to T) x tile (8*NP rows x D): products whose B
// operand runs down the rows of a tile (P V, P^T dO, dS^T Q, dS K).
template <int D, int NP, typename T>
__device__ __forceinline__ void gemm_pb(float (&acc)[D / 8][4], const float (&p)[NP][4], const T* tile, int g, int t) {
#pragma unroll
  for (int kc = 0; kc < NP / 2; ++kc) {
    const uint32_t a[4] = {pack_rounded<T>(p[2 * kc][0], p[2 * kc][1]), pack_rounded<T>(p[2 * kc][2], p[2 * kc][3]),
                           pack_rounded<T>(p[2 * kc + 1][0], p[2 * kc + 1][1]),
                           pack_rounded<T>(p[2 * kc + 1][2], p[2 * kc + 1][3])};
    const T* base = tile + (kc * 16 + 2 * t) * kStride<D> + g;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      const T* p0 = base + d * 8;
      mma16816<T>(acc[d], a, pack_pair(p0, p0 + kStride<D>), pack_pair(p0 + 8 * kStride<D>, p0 + 9 * kStride<D>));
    }
  }
}

template <typename T>
__device__ __forceinline__ void store_pair(T* p, float lo, float hi) {
  *reinterpret_cast<uint32_t*>(p) = pack_rounded<T>(lo, hi);
}

__device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ---- the key tiles of a query tile (forward and dQ) ----

// Keys a tile of query rows [m0, m0 + kTileRows) attends to: key tiles kb_begin..kb_end, and the
// start of the last row's document (key tiles at or past it need no document mask).
struct QueryTileKeys {
  int64_t kb_begin, kb_end, last_start;
};
template <int KT>
__device__ __forceinline__ QueryTileKeys keys_of_query_tile(const Geometry& geo, int64_t m0) {
  const int64_t last = min64(m0 + kTileRows - 1, geo.seq - 1);
  int64_t first_start, last_start, e;
  document_of(geo, m0, first_start, e);
  document_of(geo, last, last_start, e);
  return {first_start / KT, last / KT, last_start};
}

// The first key a query row may see: its document's start; past the sequence (a padding row of the
// last tile) one past the row, which masks every key.
__device__ __forceinline__ int64_t first_key_of(const Geometry& geo, int64_t row) {
  if (row >= geo.seq) return row + 1;
  int64_t start, end;
  document_of(geo, row, start, end);
  return start;
}

// The double-buffered K/V pipeline: before working on key tile kb (buffer (kb - kb_begin) & 1),
// start copying tile kb + 1 into the other buffer, wait for tile kb, and make it visible to the
// block. Returns the buffer of tile kb.
template <int D, int KT, typename T>
__device__ __forceinline__ int next_key_tile(T* sk, T* sv, const T* k, const T* v, const Geometry& geo, int64_t b,
                                             int64_t hk, int64_t kb, const QueryTileKeys& keys) {
  const int buf = int(kb - keys.kb_begin) & 1;
  if (kb < keys.kb_end) {
    constexpr int kTile = KT * kStride<D>;
    load_tile_async<KT, D>(sk + (buf ^ 1) * kTile, k, b, (kb + 1) * KT, hk, geo.kv_heads, geo.seq);
    load_tile_async<KT, D>(sv + (buf ^ 1) * kTile, v, b, (kb + 1) * KT, hk, geo.kv_heads, geo.seq);
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
  return buf;
}

// ---- forward ----

template <typename T, int D, int KT>
__global__ void __launch_bounds__(kThreads) flash_forward_kernel(const T* q, const T* k, const T* v, T* out,
                                                                 float* lse, Geometry geo, float scale_log2) {
  MLR_DYNAMIC_SMEM(smem);
  constexpr int S_ = kStride<D>;
  T* sq = reinterpret_cast<T*>(smem);       // [kTileRows][S_]
  T* sk = sq + kTileRows * S_;              // 2 x [KT][S_]
  T* sv = sk + 2 * KT * S_;           // 2 x [KT][S_]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t seq = geo.seq, m0 = int64_t(blockIdx.x) * kTileRows;
  const int64_t bh = batch_head_of_block();
  if (bh >= geo.batch * geo.heads) return;
  const int64_t b = bh / geo.heads, h = bh % geo.heads, hk = h / (geo.heads / geo.kv_heads);

  // This thread's two query rows (g and g + 8 of its warp's 16) and their documents' starts.
  int64_t row[2], start[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r] = m0 + warp * 16 + g + 8 * r;
    start[r] = first_key_of(geo, row[r]);
  }
  const QueryTileKeys keys = keys_of_query_tile<KT>(geo, m0);

  load_tile_async<kTileRows, D>(sq, q, b, m0, h, geo.heads, seq);
  load_tile_async<KT, D>(sk, k, b, keys.kb_begin * KT, hk, geo.kv_heads, seq);
  load_tile_async<KT, D>(sv, v, b, keys.kb_begin * KT, hk, geo.kv_heads, seq);
  cp_async_commit();

  float o[D / 8][4] = {};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int64_t kb = keys.kb_begin; kb <= keys.kb_end; ++kb) {
    const int buf = next_key_tile<D, KT>(sk, sv, k, v, geo, b, hk, kb, keys);
    const T* tk = sk + buf * KT * S_;
    const T* tv = sv + buf * KT * S_;

    float s[KT / 8][4] = {};
    gemm_abt<D>(s, sq, warp * 16, tk, g, t);

    const int64_t n0 = kb * KT;
    const bool masked = n0 + KT - 1 > m0 || n0 < keys.last_start;
#pragma unroll
    for (int n = 0; n < KT / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float x = s[n][i] * scale_log2;
        if (masked) {
          const int64_t j = n0 + n * 8 + 2 * t + (i & 1);
          const int r = i >> 1;
          if (j > row[r] || j < start[r]) x = -INFINITY;
        }
        s[n][i] = x;
      }
    float m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < KT / 8; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
      const float m_new = fmaxf(m[r], quad_max(mx));
      m_use[r] = m_new == -INFINITY ? 0.f : m_new;  // a row with no key yet: keep everything at 0
      const float correction = exp2f(m[r] - m_use[r]);
      m[r] = m_new;
      l[r] *= correction;
#pragma unroll
      for (int d = 0; d < D / 8; ++d) {
        o[d][2 * r] *= correction;
        o[d][2 * r + 1] *= correction;
      }
    }
#pragma unroll
    for (int n = 0; n < KT / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float p = exp2f(s[n][i] - m_use[i >> 1]);
        l[i >> 1] += p;
        s[n][i] = p;
      }
    gemm_pb<D>(o, s, tv, g, t);
    __syncthreads();  // every warp is done with this buffer before the next prefetch overwrites it
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float total = quad_sum(l[r]);
    const float inv = total > 0.f ? 1.f / total : 0.f;
    if (row[r] < seq) {
      T* dst = out + ((b * seq + row[r]) * geo.heads + h) * D + 2 * t;
#pragma unroll
      for (int d = 0; d < D / 8; ++d) store_pair(dst + d * 8, o[d][2 * r] * inv, o[d][2 * r + 1] * inv);
      if (t == 0) lse[(b * geo.heads + h) * seq + row[r]] = (m[r] + log2f(total)) * kLn2;
    }
  }
}

// ---- backward ----

// Dsum_i = dO_i . O_i (f32, lse layout), one warp per query row.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) flash_dsum_kernel(const T* dout, const T* out, float* dsum, Geometry geo) {
  const int lane = threadIdx.x % 32;
  const int64_t rows = geo.batch * geo.heads * geo.seq;
  for (int64_t r = blockIdx.x * int64_t(kWarps) + threadIdx.x / 32; r < rows; r += int64_t(gridDim.x) * kWarps) {
    const int64_t i = r % geo.seq, h = (r / geo.seq) % geo.heads, b = r / (geo.seq * geo.heads);
    const int64_t off = ((b * geo.seq + i) * geo.heads + h) * D;
    float acc = 0.f;
    for (int d = lane; d < D; d += 32) acc += to_f32(dout[off + d]) * to_f32(out[off + d]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) dsum[r] = acc;
  }
}

// dK and dV of one key tile (64 keys of kv head hk), summed over the query heads of the group.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) flash_dkv_kernel(const T* dout, const T* q, const T* k, const T* v,
                                                             const float* lse, const float* dsum, T* dk, T* dv,
                                                             Geometry geo, float scale, float scale_log2) {
  MLR_DYNAMIC_SMEM(smem);
  constexpr int S_ = kStride<D>;
  T* sk = reinterpret_cast<T*>(smem);     // [kTileRows][S_]
  T* sv = sk + kTileRows * S_;            // [kTileRows][S_]
  T* sq = sv + kTileRows * S_;            // 2 x [kQueryTile][S_]
  T* sdo = sq + 2 * kQueryTile * S_;      // 2 x [kQueryTile][S_]
  float* slse = reinterpret_cast<float*>(sdo + 2 * kQueryTile * S_);  // 2 x [kQueryTile], log2 units
  float* sdsum = slse + 2 * kQueryTile;                               // 2 x [kQueryTile]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t seq = geo.seq, n0 = int64_t(blockIdx.x) * kTileRows;
  const int64_t bh = batch_head_of_block();
  if (bh >= geo.batch * geo.kv_heads) return;
  const int64_t b = bh / geo.kv_heads, hk = bh % geo.kv_heads;
  const int64_t group = geo.heads / geo.kv_heads;

  // This thread's two key rows and the ends of their documents: key j is seen by queries [j, end_j).
  int64_t key[2], end[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    key[r] = n0 + warp * 16 + g + 8 * r;
    int64_t s0;
    if (key[r] < seq) document_of(geo, key[r], s0, end[r]);
    else end[r] = 0;  // padding row: no query
  }
  const int64_t last = min64(n0 + kTileRows - 1, seq - 1);
  int64_t s0, first_end, last_end;
  document_of(geo, n0, s0, first_end);
  document_of(geo, last, s0, last_end);
  const int64_t qt_begin = n0 / kQueryTile, qt_end = (last_end + kQueryTile - 1) / kQueryTile;
  const int64_t tiles_per_head = qt_end - qt_begin, tiles = tiles_per_head * group;

  // Stages query tile `it` (head, position) into buffer `buf`: Q and dO asynchronously, lse and Dsum
  // with plain loads (read only after the next barrier).
  auto stage = [&](int64_t it, int buf) {
    const int64_t h = hk * group + it / tiles_per_head, q0 = (qt_begin + it % tiles_per_head) * kQueryTile;
    load_tile_async<kQueryTile, D>(sq + buf * kQueryTile * S_, q, b, q0, h, geo.heads, seq);
    load_tile_async<kQueryTile, D>(sdo + buf * kQueryTile * S_, dout, b, q0, h, geo.heads, seq);
    if (threadIdx.x < kQueryTile) {
      const int64_t i = q0 + threadIdx.x;
      const int64_t stat = (b * geo.heads + h) * seq + i;
      slse[buf * kQueryTile + threadIdx.x] = i < seq ? lse[stat] * kLog2e : 0.f;
      sdsum[buf * kQueryTile + threadIdx.x] = i < seq ? dsum[stat] : 0.f;
    }
  };

  load_tile_async<kTileRows, D>(sk, k, b, n0, hk, geo.kv_heads, seq);
  load_tile_async<kTileRows, D>(sv, v, b, n0, hk, geo.kv_heads, seq);
  if (tiles > 0) stage(0, 0);
  cp_async_commit();

  float dk_acc[D / 8][4] = {}, dv_acc[D / 8][4] = {};
  for (int64_t it = 0; it < tiles; ++it) {
    const int buf = int(it & 1);
    if (it + 1 < tiles) {
      stage(it + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const T* tq = sq + buf * kQueryTile * S_;
    const T* tdo = sdo + buf * kQueryTile * S_;
    const float* tlse = slse + buf * kQueryTile;
    const float* tdsum = sdsum + buf * kQueryTile;
    const int64_t q0 = (qt_begin + it % tiles_per_head) * kQueryTile;

    // P^T = exp(K Q^T * scale - lse), rows = this warp's keys, columns = the tile's queries.
    float p[kQueryTile / 8][4] = {};
    gemm_abt<D>(p, sk, warp * 16, tq, g, t);
    const bool masked = q0 < n0 + kTileRows - 1 || q0 + kQueryTile > first_end;
#pragma unroll
    for (int n = 0; n < kQueryTile / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int c = n * 8 + 2 * t + (i & 1);
        const int64_t qi = q0 + c;
        const int r = i >> 1;
        const bool keep = !masked || (qi >= key[r] && qi < end[r]);
        p[n][i] = keep ? exp2f(p[n][i] * scale_log2 - tlse[c]) : 0.f;
      }
    gemm_pb<D>(dv_acc, p, tdo, g, t);  // dV += P^T dO

    // dS^T = P^T * (V dO^T - Dsum)
    float ds[kQueryTile / 8][4] = {};
    gemm_abt<D>(ds, sv, warp * 16, tdo, g, t);
#pragma unroll
    for (int n = 0; n < kQueryTile / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) ds[n][i] = p[n][i] * (ds[n][i] - tdsum[n * 8 + 2 * t + (i & 1)]);
    gemm_pb<D>(dk_acc, ds, tq, g, t);  // dK += dS^T Q
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (key[r] >= seq) continue;
    const int64_t off = ((b * seq + key[r]) * geo.kv_heads + hk) * D + 2 * t;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) {
      store_pair(dk + off + d * 8, dk_acc[d][2 * r] * scale, dk_acc[d][2 * r + 1] * scale);
      store_pair(dv + off + d * 8, dv_acc[d][2 * r], dv_acc[d][2 * r + 1]);
    }
  }
}

// dQ of one query tile (64 rows of head h), looping over key tiles of KT (32 on 99 KB devices).
template <typename T, int D, int KT>
__global__ void __launch_bounds__(kThreads) flash_dq_kernel(const T* dout, const T* q, const T* k, const T* v,
                                                            const float* lse, const float* dsum, T* dq, Geometry geo,
                                                            float scale, float scale_log2) {
  MLR_DYNAMIC_SMEM(smem);
  constexpr int S_ = kStride<D>;
  T* sq = reinterpret_cast<T*>(smem);   // [kTileRows][S_]
  T* sdo = sq + kTileRows * S_;         // [kTileRows][S_]
  T* sk = sdo + kTileRows * S_;         // 2 x [KT][S_]
  T* sv = sk + 2 * KT * S_;       // 2 x [KT][S_]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int64_t seq = geo.seq, m0 = int64_t(blockIdx.x) * kTileRows;
  const int64_t bh = batch_head_of_block();
  if (bh >= geo.batch * geo.heads) return;
  const int64_t b = bh / geo.heads, h = bh % geo.heads, hk = h / (geo.heads / geo.kv_heads);

  int64_t row[2], start[2];
  float row_lse[2], row_dsum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    row[r] = m0 + warp * 16 + g + 8 * r;
    start[r] = first_key_of(geo, row[r]);
    const int64_t stat = (b * geo.heads + h) * seq + row[r];
    row_lse[r] = row[r] < seq ? lse[stat] * kLog2e : 0.f;
    row_dsum[r] = row[r] < seq ? dsum[stat] : 0.f;
  }
  const QueryTileKeys keys = keys_of_query_tile<KT>(geo, m0);

  load_tile_async<kTileRows, D>(sq, q, b, m0, h, geo.heads, seq);
  load_tile_async<kTileRows, D>(sdo, dout, b, m0, h, geo.heads, seq);
  load_tile_async<KT, D>(sk, k, b, keys.kb_begin * KT, hk, geo.kv_heads, seq);
  load_tile_async<KT, D>(sv, v, b, keys.kb_begin * KT, hk, geo.kv_heads, seq);
  cp_async_commit();

  float dq_acc[D / 8][4] = {};
  for (int64_t kb = keys.kb_begin; kb <= keys.kb_end; ++kb) {
    const int buf = next_key_tile<D, KT>(sk, sv, k, v, geo, b, hk, kb, keys);
    const T* tk = sk + buf * KT * S_;
    const T* tv = sv + buf * KT * S_;
    const int64_t n0 = kb * KT;
    const bool masked = n0 + KT - 1 > m0 || n0 < keys.last_start;

    float p[KT / 8][4] = {};
    gemm_abt<D>(p, sq, warp * 16, tk, g, t);
#pragma unroll
    for (int n = 0; n < KT / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t j = n0 + n * 8 + 2 * t + (i & 1);
        const int r = i >> 1;
        const bool keep = !masked || (j <= row[r] && j >= start[r]);
        p[n][i] = keep ? exp2f(p[n][i] * scale_log2 - row_lse[r]) : 0.f;
      }
    float ds[KT / 8][4] = {};
    gemm_abt<D>(ds, sdo, warp * 16, tv, g, t);  // dP = dO V^T
#pragma unroll
    for (int n = 0; n < KT / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) ds[n][i] = p[n][i] * (ds[n][i] - row_dsum[i >> 1]);
    gemm_pb<D>(dq_acc, ds, tk, g, t);  // dQ += dS K
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    if (row[r] >= seq) continue;
    T* dst = dq + ((b * seq + row[r]) * geo.heads + h) * D + 2 * t;
#pragma unroll
    for (int d = 0; d < D / 8; ++d) store_pair(dst + d * 8, dq_acc[d][2 * r] * scale, dq_acc[d][2 * r + 1] * scale);
  }
}

// ---- launch shapes (shared by attention_flash.cu and the emulation tests) ----
// Forward and dQ: grid (row_tiles, batch_heads_grid(batch * heads)); dK/dV: grid (row_tiles,
// batch_heads_grid(batch * kv_heads)); all kThreads threads and the dynamic shared memory of
// arch_limits.h (flash::forward_smem, dq_smem, dkv_smem).

// The (y, z) extent of a grid over `n` batch-head pairs (batch_head_of_block), at most `y_limit` in
// y (the hardware's 65,535; tests lower it to reach grid.z with small shapes).
inline std::pair<unsigned, unsigned> batch_heads_grid(int64_t n, int64_t y_limit = 65535) {
  const int64_t y = std::max<int64_t>(1, std::min(n, y_limit));
  return {unsigned(y), unsigned(std::max<int64_t>(1, (n + y - 1) / y))};
}

inline unsigned row_tiles(const Geometry& g) { return unsigned((g.seq + kTileRows - 1) / kTileRows); }

inline Geometry geometry_of(const Tensor& q, const Tensor& k, const Tensor& cu) {
  Geometry g{q.size(0), q.size(1), q.size(2), k.size(2), nullptr, 0};
  if (cu.defined()) {
    g.cu = static_cast<const int32_t*>(cu.data_ptr());
    g.docs = cu.numel() - 1;
  }
  return g;
}

}  // namespace

}  // namespace mlr::cuda

// Batched matrix product through BLAS (OpenBLAS):  out[b] = a[b] @ b[b],  a [B, m, k], b [B, k, n].
//
// Each operand's last two dims are row-major (unit column stride: NoTrans, ld = row stride) or
// column-major (unit row stride: CblasTrans, ld = column stride), so a transposed view reaches BLAS
// without a copy. A batch stride of 0 (a broadcast operand) is just the same pointer every batch.
// f32 and f64 call sgemm / dgemm directly. bf16 on a CPU with AVX512-BF16 runs our own GEMM
// (Debian's OpenBLAS 0.3.21 is built without sbgemm): operands packed as pairs of bf16 along k,
// vdpbf16ps into f32 accumulators over all of k, each output rounded once to bf16. Elsewhere bf16
// and f16 are converted to f32 blocks, multiplied with sgemm (f32 accumulation) and the product
// rounded once into out.
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <optional>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"

#if MLR_HAVE_X86_TARGETS
#include <immintrin.h>
#endif

namespace mlr::cpu {

namespace {

struct BlasMatrix {
  CBLAS_TRANSPOSE trans;
  int64_t ld;
};

// How BLAS reads a rows x cols matrix with element strides (srow, scol); nullopt when neither
// layout fits. Size-1 dimensions may have any stride, so they never force a copy.
std::optional<BlasMatrix> blas_layout(int64_t rows, int64_t cols, int64_t srow, int64_t scol) {
  if (scol == 1 || cols == 1) {
    int64_t ld = rows == 1 ? std::max<int64_t>(cols, 1) : srow;
    if (ld >= std::max<int64_t>(cols, 1)) return BlasMatrix{CblasNoTrans, ld};
  }
  if (srow == 1 || rows == 1) {
    int64_t ld = cols == 1 ? std::max<int64_t>(rows, 1) : scol;
    if (ld >= std::max<int64_t>(rows, 1)) return BlasMatrix{CblasTrans, ld};
  }
  return std::nullopt;
}

template <typename T>
void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda,
          const T* b, int64_t ldb, T* c, int64_t ldc) {
  const auto M = static_cast<blasint>(m), N = static_cast<blasint>(n), K = static_cast<blasint>(k);
  if constexpr (std::is_same_v<T, float>) {
    cblas_sgemm(CblasRowMajor, ta, tb, M, N, K, 1.0f, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb),
                0.0f, c, static_cast<blasint>(ldc));
  } else {
    cblas_dgemm(CblasRowMajor, ta, tb, M, N, K, 1.0, a, static_cast<blasint>(lda), b, static_cast<blasint>(ldb),
                0.0, c, static_cast<blasint>(ldc));
  }
}

// f32 / f64: one GEMM per batch, straight on the operands' memory.
template <typename T>
void matmul_blas(const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t batch = a.size(0), m = a.size(1), k = a.size(2), n = b.size(2);
  auto la = blas_layout(m, k, a.stride(1), a.stride(2));
  auto lb = blas_layout(k, n, b.stride(1), b.stride(2));
  MLR_CHECK(la && lb,
            "matmul (cpu kernel): operands need row- or column-major matrices, got a {} strides {} and b {} strides {}",
            shape_str(a.shape()), shape_str(a.strides()), shape_str(b.shape()), shape_str(b.strides()));
  for (int64_t v : {m, n, k, la->ld, lb->ld})
    MLR_CHECK(v <= INT_MAX, "matmul (cpu kernel): size {} exceeds the BLAS integer range (shapes {} and {})", v,
              shape_str(a.shape()), shape_str(b.shape()));
  const T* pa = static_cast<const T*>(a.data_ptr());
  const T* pb = static_cast<const T*>(b.data_ptr());
  T* pc = static_cast<T*>(out.data_ptr());
  for (int64_t i = 0; i < batch; ++i)
    gemm<T>(la->trans, lb->trans, m, n, k, pa + i * a.stride(0), la->ld, pb + i * b.stride(0), lb->ld, pc + i * m * n,
            n);
}

// Working memory of the 16-bit paths (the f32 path's converted operands and product, the bf16
// kernel's packed operands): one region per thread and element type, kept between calls up to
// 64 MiB, because faulting in fresh pages costs more than the conversion itself. Larger requests
// use `oneoff`, freed with the call.
template <typename T>
T* scratch(size_t n, std::vector<T>& oneoff) {
  constexpr size_t kKeep = (size_t(64) << 20) / sizeof(T);
  thread_local std::vector<T> kept;
  std::vector<T>& buf = n > kKeep ? oneoff : kept;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

Tensor wrap_f32(float* p, const Shape& shape) {
  auto storage = std::make_shared<Storage>(p, static_cast<size_t>(shape_numel(shape)) * sizeof(float), Device::cpu(),
                                           [](void*) {});
  return Tensor(storage, shape, contiguous_strides(shape), 0, DType::f32);
}

// t [B, rows, cols] (any strides) converted into dst, contiguous; a batch-broadcast operand (batch
// stride 0) is converted once. Conversions run on the calling thread: they are cheap next to the
// GEMM, and OpenMP workers left spinning after a parallel region would compete with OpenBLAS's own
// threads for the cores.
template <typename T>
Tensor to_f32_block(const Tensor& t, float* dst) {
  const bool shared = t.size(0) > 1 && t.stride(0) == 0;
  const int64_t batch = shared ? 1 : t.size(0), rows = t.size(1), cols = t.size(2);
  const int64_t sb = t.stride(0), si = t.stride(1), sj = t.stride(2);
  const T* src = static_cast<const T*>(t.data_ptr());
  Tensor block = wrap_f32(dst, {batch, rows, cols});
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < rows; ++i) {
      const T* row = src + b * sb + i * si;
      for (int64_t j = 0; j < cols; ++j) *dst++ = static_cast<float>(row[j * sj]);
    }
  return shared ? block.expand(t.shape()) : block;
}


#if MLR_HAVE_X86_TARGETS
// ---- bf16 x bf16 -> f32 accumulation -> bf16 with AVX512-BF16 ----
// C [M, N] = A [M, K] B [K, N]. vdpbf16ps multiplies 16 pairs of bf16 and adds each pair's two
// products to one f32 lane, so both operands are packed as 32-bit pairs (element k low, k + 1
// high) along k: A in panels of kBf16MR rows ([k pair][row]), B in panels of kBf16NR columns
// ([k pair][column]), zero-padded at the edges and at an odd K. A register tile of kBf16MR x
// kBf16NR accumulates over all of K (in order), so each output is rounded once, and the result
// does not depend on the thread count. Both operands are packed in parallel, then tiles of (column
// block, row block) are split over threads in one parallel region (three barriers per product).
constexpr int64_t kBf16MR = 12, kBf16NR = 32, kBf16MC = 8 * kBf16MR;

struct Bf16Operand {  // element (i, k) at p[i * rs + k * cs]
  const uint16_t* p;
  int64_t rs, cs;
  uint32_t pair(int64_t i, int64_t k, int64_t K) const {  // (i, k) low, (i, k + 1) high
    const uint32_t lo = p[i * rs + k * cs];
    const uint32_t hi = k + 1 < K ? p[i * rs + (k + 1) * cs] : 0u;
    return lo | (hi << 16);
  }
};

// Rows [panel * width, (panel + 1) * width) of op (rows >= `rows` as zeros) as [k pair][row].
void pack_panel(const Bf16Operand& op, int64_t rows, int64_t K, int64_t panel, int64_t width, uint32_t* dst) {
  for (int64_t kp = 0; kp < (K + 1) / 2; ++kp)
    for (int64_t r = 0; r < width; ++r) {
      const int64_t row = panel * width + r;
      dst[kp * width + r] = row < rows ? op.pair(row, 2 * kp, K) : 0u;
    }
}

MLR_TARGET_AVX512_BF16 void bf16_tile(int64_t kpairs, const uint32_t* ap, const uint32_t* bp, float* ct) {
  __m512 c0[kBf16MR], c1[kBf16MR];
#pragma GCC unroll 16
  for (int r = 0; r < kBf16MR; ++r) {
    c0[r] = _mm512_setzero_ps();
    c1[r] = _mm512_setzero_ps();
  }
  for (int64_t kp = 0; kp < kpairs; ++kp) {
    const __m512i b0 = _mm512_loadu_si512(bp + kp * kBf16NR);
    const __m512i b1 = _mm512_loadu_si512(bp + kp * kBf16NR + 16);
#pragma GCC unroll 16
    for (int r = 0; r < kBf16MR; ++r) {
      const __m512i a = _mm512_set1_epi32(static_cast<int>(ap[kp * kBf16MR + r]));
      c0[r] = _mm512_dpbf16_ps(c0[r], (__m512bh)a, (__m512bh)b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], (__m512bh)a, (__m512bh)b1);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < kBf16MR; ++r) {
    _mm512_storeu_ps(ct + r * kBf16NR, c0[r]);
    _mm512_storeu_ps(ct + r * kBf16NR + 16, c1[r]);
  }
}

void matmul_bf16_avx512(const Tensor& out, const Tensor& a, const Tensor& b) {
  const int64_t batch = a.size(0), M = a.size(1), K = a.size(2), N = b.size(2), kpairs = (K + 1) / 2;
  // Tasks are (column block, row block), column-block major, so one thread's consecutive tasks
  // read the same packed B block (kpairs x NC pairs of 4 bytes, within 512 KiB of L2).
  const int64_t NC = std::clamp<int64_t>((512 * 1024 / (kpairs * 4)) / kBf16NR * kBf16NR, kBf16NR, 1024);
  const int64_t n_panels = (N + kBf16NR - 1) / kBf16NR, m_panels = (M + kBf16MR - 1) / kBf16MR;
  const int64_t panels_per_block = NC / kBf16NR, n_blocks = (n_panels + panels_per_block - 1) / panels_per_block;
  const int64_t m_blocks = (M + kBf16MC - 1) / kBf16MC;
  // both operands packed whole, once per call, into one scratch region
  const size_t na = static_cast<size_t>(m_panels * kpairs * kBf16MR);
  std::vector<uint32_t> oneoff;
  uint32_t* pa = scratch<uint32_t>(na + static_cast<size_t>(n_panels * kpairs * kBf16NR), oneoff);
  uint32_t* pb = pa + na;
  uint16_t* po = static_cast<uint16_t*>(out.data_ptr());
  for (int64_t bi = 0; bi < batch; ++bi) {
    const Bf16Operand A{static_cast<const uint16_t*>(a.data_ptr()) + bi * a.stride(0), a.stride(1), a.stride(2)};
    // B^T: element (column j, k)
    const Bf16Operand Bt{static_cast<const uint16_t*>(b.data_ptr()) + bi * b.stride(0), b.stride(2), b.stride(1)};
    uint16_t* C = po + bi * M * N;
#pragma omp parallel if (M * N * K >= (1 << 18))
    {
#pragma omp for schedule(static) nowait
      for (int64_t p = 0; p < n_panels; ++p) pack_panel(Bt, N, K, p, kBf16NR, pb + p * kpairs * kBf16NR);
#pragma omp for schedule(static)
      for (int64_t q = 0; q < m_panels; ++q) pack_panel(A, M, K, q, kBf16MR, pa + q * kpairs * kBf16MR);
      alignas(64) float ct[kBf16MR * kBf16NR];
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < n_blocks * m_blocks; ++task) {
        const int64_t nb = task / m_blocks, mb = task % m_blocks;
        const int64_t p1 = std::min(n_panels, (nb + 1) * panels_per_block);
        const int64_t q0 = mb * (kBf16MC / kBf16MR), q1 = std::min(m_panels, q0 + kBf16MC / kBf16MR);
        for (int64_t p = nb * panels_per_block; p < p1; ++p) {
          const int64_t j0 = p * kBf16NR, nj = std::min(kBf16NR, N - j0);
          for (int64_t q = q0; q < q1; ++q) {
            bf16_tile(kpairs, pa + q * kpairs * kBf16MR, pb + p * kpairs * kBf16NR, ct);
            const int64_t r0 = q * kBf16MR, nr = std::min(kBf16MR, M - r0);
            for (int64_t r = 0; r < nr; ++r)
              for (int64_t j = 0; j < nj; ++j) C[(r0 + r) * N + j0 + j] = f32_to_bf16_bits(ct[r * kBf16NR + j]);
          }
        }
      }
    }
  }
}
#endif

template <typename T>
void matmul_16bit(const Tensor& out, const Tensor& a, const Tensor& b) {
  auto converted_size = [](const Tensor& t) {
    const int64_t batch = t.size(0) > 1 && t.stride(0) == 0 ? 1 : t.size(0);
    return static_cast<size_t>(batch * t.size(1) * t.size(2));
  };
  const size_t na = converted_size(a), nb = converted_size(b), nc = static_cast<size_t>(out.numel());
  std::vector<float> oneoff;
  float* buf = scratch<float>(na + nb + nc, oneoff);
  Tensor c = wrap_f32(buf + na + nb, out.shape());
  matmul_blas<float>(c, to_f32_block<T>(a, buf), to_f32_block<T>(b, buf + na));
  // the only rounding to 16 bits
  T* dst = static_cast<T*>(out.data_ptr());
  const float* src = buf + na + nb;
  for (size_t i = 0; i < nc; ++i) dst[i] = static_cast<T>(src[i]);
}

}  // namespace

void matmul(const Tensor& out, const Tensor& a, const Tensor& b) {
  MLR_CHECK(a.dim() == 3 && b.dim() == 3 && out.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1) &&
                out.shape() == Shape({a.size(0), a.size(1), b.size(2)}),
            "matmul (cpu kernel): expected a [B, m, k], b [B, k, n], out [B, m, n], got {}, {}, {}",
            shape_str(a.shape()), shape_str(b.shape()), shape_str(out.shape()));
  MLR_CHECK(a.dtype() == b.dtype() && a.dtype() == out.dtype(), "matmul (cpu kernel): dtypes {}, {}, {} differ",
            a.dtype(), b.dtype(), out.dtype());
  if (out.numel() == 0) return;
  MLR_CHECK(out.is_contiguous(), "matmul (cpu kernel): out must be contiguous");
  if (a.size(2) == 0) {  // empty inner dimension: the sum over nothing
    fill(out, 0.0);
    return;
  }
  switch (a.dtype()) {
    case DType::f32: matmul_blas<float>(out, a, b); return;
    case DType::f64: matmul_blas<double>(out, a, b); return;
    case DType::bf16:
#if MLR_HAVE_X86_TARGETS
      // also for products narrower than a tile (LoRA's rank-r factors): the padded lanes cost less
      // than the f32 path's conversion passes
      if (cpu_has_avx512_bf16()) return matmul_bf16_avx512(out, a, b);
#endif
      matmul_16bit<bf16>(out, a, b);
      return;
    case DType::f16: matmul_16bit<f16>(out, a, b); return;
    default:
      throw Error(fmt::format("matmul: dtype {} is not supported (expected f32, f64, bf16 or f16)", a.dtype()));
  }
}

}  // namespace mlr::cpu

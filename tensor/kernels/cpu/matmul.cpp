// Batched matrix product through BLAS (OpenBLAS):  out[b] = a[b] @ b[b],  a [B, m, k], b [B, k, n].
//
// Each operand's last two dims are row-major (unit column stride: NoTrans, ld = row stride) or
// column-major (unit row stride: CblasTrans, ld = column stride), so a transposed view reaches BLAS
// without a copy. A batch stride of 0 (a broadcast operand) is just the same pointer every batch.
// f32 and f64 call sgemm / dgemm directly. bf16 and f16 have no BLAS: the operands are converted to
// f32 blocks, multiplied with sgemm (f32 accumulation) and the product rounded once into out.
#include <cblas.h>

#include <climits>
#include <memory>
#include <optional>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"

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

// f32 working memory of the 16-bit path (both operands and the product): one region per thread,
// kept between calls up to 64 MiB, because faulting in fresh pages costs more than the conversion
// itself. Larger requests use `oneoff`, freed with the call.
float* f32_scratch(size_t n, std::vector<float>& oneoff) {
  constexpr size_t kKeep = (size_t(64) << 20) / sizeof(float);
  thread_local std::vector<float> kept;
  std::vector<float>& buf = n > kKeep ? oneoff : kept;
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

template <typename T>
void matmul_16bit(const Tensor& out, const Tensor& a, const Tensor& b) {
  auto converted_size = [](const Tensor& t) {
    const int64_t batch = t.size(0) > 1 && t.stride(0) == 0 ? 1 : t.size(0);
    return static_cast<size_t>(batch * t.size(1) * t.size(2));
  };
  const size_t na = converted_size(a), nb = converted_size(b), nc = static_cast<size_t>(out.numel());
  std::vector<float> oneoff;
  float* buf = f32_scratch(na + nb + nc, oneoff);
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
    case DType::bf16: matmul_16bit<bf16>(out, a, b); return;
    case DType::f16: matmul_16bit<f16>(out, a, b); return;
    default:
      throw Error(fmt::format("matmul: dtype {} is not supported (expected f32, f64, bf16 or f16)", a.dtype()));
  }
}

}  // namespace mlr::cpu

// Batched matrix product through cuBLASLt:  out[b] = a[b] @ b[b],  a [B, m, k], b [B, k, n],
// out [B, m, n] contiguous (row-major).
//
// cuBLASLt is column-major, so we ask it for out^T = b^T a^T: a row-major matrix with leading
// dimension ld is the column-major matrix of its transpose with the same ld, so a row-major operand
// goes in untransposed (op N) and a column-major one (a transposed view: unit row stride) goes in
// with op T. No operand is ever copied unless neither layout fits (then it is made contiguous).
//
// Types: f32 (compute 32F; TF32 only when MLR_ALLOW_TF32=1 is set in the environment, so f32 stays
// exact by default), bf16 and f16 (f32 accumulation, f32 alpha/beta), f64 (compute 64F).
// A batch stride of 0 (one operand broadcast over the batch) is run as one GEMM per batch entry.
//
// Per device: one cuBLASLt handle and a 32 MiB workspace, created on first use. The algorithm for a
// problem (types, sizes, layouts, pointer alignments) comes from the heuristic once and is cached.
#include <cublasLt.h>

#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"

#define MLR_CUBLAS_CHECK(expr)                                                                                \
  do {                                                                                                        \
    cublasStatus_t mlr_status_ = (expr);                                                                      \
    if (mlr_status_ != CUBLAS_STATUS_SUCCESS)                                                                 \
      throw ::mlr::Error(::fmt::format("cublasLt: {} failed at {}:{}: {}", #expr, __FILE__, __LINE__,          \
                                       cublasLtGetStatusString(mlr_status_)));                                \
  } while (0)

namespace mlr::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t(32) << 20;
constexpr int kMaxDevices = 64;

#ifndef MLR_CUDA_EMULATION
struct DeviceGemm {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

DeviceGemm& device_gemm(int device) {
  static std::mutex mutex;
  static DeviceGemm per_device[kMaxDevices];
  MLR_CHECK(device >= 0 && device < kMaxDevices, "matmul (cuda kernel): device index {} out of range", device);
  std::lock_guard<std::mutex> lock(mutex);
  DeviceGemm& g = per_device[device];
  if (!g.handle) {
    MLR_CUBLAS_CHECK(cublasLtCreate(&g.handle));
    // One-time allocation kept for the life of the process (not a per-op cudaMalloc).
    MLR_CUDA_CHECK(cudaMalloc(&g.workspace, kWorkspaceBytes));
  }
  return g;
}
#endif

bool allow_tf32() {
  static const bool allowed = [] {
    const char* v = std::getenv("MLR_ALLOW_TF32");
    return v != nullptr && std::string(v) == "1";
  }();
  return allowed;
}

// How cuBLASLt reads a rows x cols matrix stored with element strides (srow, scol).
struct LtOperand {
  cublasOperation_t op;
  uint64_t rows, cols;  // of the stored column-major matrix
  int64_t ld;
};

// The operand as the column-major matrix of its transpose (see the header comment): row-major
// storage -> op N of a cols x rows matrix; column-major storage -> op T of a rows x cols matrix.
std::optional<LtOperand> lt_operand(int64_t rows, int64_t cols, int64_t srow, int64_t scol) {
  const int64_t r = std::max<int64_t>(rows, 1), c = std::max<int64_t>(cols, 1);
  if (scol == 1 || cols == 1) {
    const int64_t ld = rows == 1 ? c : srow;
    if (ld >= c) return LtOperand{CUBLAS_OP_N, uint64_t(cols), uint64_t(rows), ld};
  }
  if (srow == 1 || rows == 1) {
    const int64_t ld = cols == 1 ? r : scol;
    if (ld >= r) return LtOperand{CUBLAS_OP_T, uint64_t(rows), uint64_t(cols), ld};
  }
  return std::nullopt;
}

int alignment_of(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  int a = 256;
  while (a > 1 && addr % a != 0) a /= 2;
  return a;
}

struct Types {
  cudaDataType_t data;
  cublasComputeType_t compute;
  cudaDataType_t scale;
};

Types types_of(DType t) {
  switch (t) {
    case DType::f32: return {CUDA_R_32F, allow_tf32() ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case DType::bf16: return {CUDA_R_16BF, CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case DType::f16: return {CUDA_R_16F, CUBLAS_COMPUTE_32F, CUDA_R_32F};
    case DType::f64: return {CUDA_R_64F, CUBLAS_COMPUTE_64F, CUDA_R_64F};
    default: MLR_CHECK(false, "matmul (cuda kernel): dtype {} is not supported", t);
  }
  return {};
}

#ifndef MLR_CUDA_EMULATION

// RAII holders so an exception between create and destroy leaks nothing.
struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct Layout {
  cublasLtMatrixLayout_t l = nullptr;
  ~Layout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() { if (p) cublasLtMatmulPreferenceDestroy(p); }
};

void make_layout(Layout& layout, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch,
                 int64_t batch_stride) {
  MLR_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout.l, type, rows, cols, ld));
  if (batch > 1) {
    MLR_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout.l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof(batch)));
    MLR_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout.l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                      &batch_stride, sizeof(batch_stride)));
  }
}

const char* op_name(cublasOperation_t op) { return op == CUBLAS_OP_N ? "N" : "T"; }

const char* compute_name(cublasComputeType_t c) {
  switch (c) {
    case CUBLAS_COMPUTE_32F: return "f32";
    case CUBLAS_COMPUTE_32F_FAST_TF32: return "f32 with tf32 tensor cores (MLR_ALLOW_TF32=1)";
    case CUBLAS_COMPUTE_64F: return "f64";
    default: return "other";
  }
}

// The GEMM cuBLASLt found no algorithm for, in its terms (column-major operands, op, leading
// dimension) and ours (the product's shape), with what usually explains it.
std::string no_algorithm_message(int device, DType dtype, const Types& t, const LtOperand& first,
                                 int64_t first_batch_stride, const LtOperand& second, int64_t second_batch_stride,
                                 int64_t m, int64_t n, int32_t batch, int align_a, int align_b, int align_c) {
  const uint64_t k = first.op == CUBLAS_OP_N ? first.cols : first.rows;
  return fmt::format(
      "matmul (cuda:{}): cuBLASLt has no algorithm for this GEMM: out [{} x {}] = a [{} x {}] @ b [{} x {}], batch {}; "
      "dtype {} (compute {}); cuBLASLt operands (column-major): A = our b, op {}, {} x {}, ld {}, batch stride {}, "
      "{}-byte aligned; B = our a, op {}, {} x {}, ld {}, batch stride {}, {}-byte aligned; C/D {} x {}, ld {}, "
      "{}-byte aligned. Tensor cores need 16-byte aligned pointers and leading dimensions that are multiples of "
      "8 elements (bf16/f16): a contiguous() copy of a strided view usually helps",
      device, m, n, m, k, k, n, batch, dtype_name(dtype), compute_name(t.compute), op_name(first.op), first.rows,
      first.cols, first.ld, first_batch_stride, align_a, op_name(second.op), second.rows, second.cols, second.ld,
      second_batch_stride, align_b, n, m, n, align_c);
}

// One cuBLASLt call: d = op(first) op(second) with `batch` entries. `first` is our b, `second` our a.
void lt_matmul(int device, cudaStream_t stream, DType dtype, const LtOperand& first, const void* first_ptr,
               int64_t first_batch_stride, const LtOperand& second, const void* second_ptr,
               int64_t second_batch_stride, void* out_ptr, int64_t m, int64_t n, int32_t batch) {
  DeviceGemm& g = device_gemm(device);
  const Types t = types_of(dtype);
  MatmulDesc desc;
  MLR_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc.d, t.compute, t.scale));
  MLR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &first.op, sizeof(first.op)));
  MLR_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &second.op, sizeof(second.op)));
  Layout la, lb, lc;
  make_layout(la, t.data, first.rows, first.cols, first.ld, batch, first_batch_stride);
  make_layout(lb, t.data, second.rows, second.cols, second.ld, batch, second_batch_stride);
  make_layout(lc, t.data, uint64_t(n), uint64_t(m), n, batch, m * n);

  const int align_a = alignment_of(first_ptr), align_b = alignment_of(second_ptr), align_c = alignment_of(out_ptr);
  const auto key = std::make_tuple(device, int(dtype), int(first.op), int(second.op), first.rows, first.cols, first.ld,
                                   second.rows, second.cols, second.ld, m, n, batch, first_batch_stride,
                                   second_batch_stride, align_a, align_b, align_c);
  static std::mutex cache_mutex;
  static std::map<decltype(key), cublasLtMatmulAlgo_t> cache;
  cublasLtMatmulAlgo_t algo;
  bool found = false;
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    auto it = cache.find(key);
    if (it != cache.end()) {
      algo = it->second;
      found = true;
    }
  }
  if (!found) {
    Preference pref;
    MLR_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref.p));
    const uint64_t ws = kWorkspaceBytes;
    MLR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
    const uint32_t aa = align_a, ab = align_b, ac = align_c;
    MLR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &aa, sizeof(aa)));
    MLR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &ab, sizeof(ab)));
    MLR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &ac, sizeof(ac)));
    MLR_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &ac, sizeof(ac)));
    cublasLtMatmulHeuristicResult_t result{};
    int returned = 0;
    // "No algorithm" comes as NOT_SUPPORTED or as zero results: either way the user needs the
    // problem cuBLASLt was asked, not a status name.
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(g.handle, desc.d, la.l, lb.l, lc.l, lc.l, pref.p, 1, &result, &returned);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && returned == 0))
      throw Error(no_algorithm_message(device, dtype, t, first, first_batch_stride, second, second_batch_stride, m, n,
                                       batch, align_a, align_b, align_c));
    MLR_CUBLAS_CHECK(status);
    algo = result.algo;
    std::lock_guard<std::mutex> lock(cache_mutex);
    cache.emplace(key, algo);
  }
  const float one_f = 1.0f, zero_f = 0.0f;
  const double one_d = 1.0, zero_d = 0.0;
  const void* alpha = dtype == DType::f64 ? static_cast<const void*>(&one_d) : static_cast<const void*>(&one_f);
  const void* beta = dtype == DType::f64 ? static_cast<const void*>(&zero_d) : static_cast<const void*>(&zero_f);
  MLR_CUBLAS_CHECK(cublasLtMatmul(g.handle, desc.d, alpha, first_ptr, la.l, second_ptr, lb.l, beta, out_ptr, lc.l,
                                  out_ptr, lc.l, &algo, g.workspace, kWorkspaceBytes, stream));
}

#else  // MLR_CUDA_EMULATION

// The emulated build computes what the cuBLASLt call above asks for, on host memory, from the same
// operand descriptions: d (n x m, column-major, ld n) = op(first) op(second), summed in f32 (f64 for
// f64) and rounded once, so the layout logic above is tested too.
template <typename T>
double read_element(const void* p, int64_t i) {
  const T v = static_cast<const T*>(p)[i];
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else return double(v);
}

template <typename T, typename A>
void emulated_matmul(const LtOperand& first, const void* first_ptr, int64_t first_batch_stride,
                     const LtOperand& second, const void* second_ptr, int64_t second_batch_stride, void* out_ptr,
                     int64_t m, int64_t n, int32_t batch) {
  const int64_t k = first.op == CUBLAS_OP_N ? int64_t(first.cols) : int64_t(first.rows);
  auto element = [](const LtOperand& x, const void* p, int64_t offset, int64_t r, int64_t c) {
    return x.op == CUBLAS_OP_N ? read_element<T>(p, offset + r + c * x.ld) : read_element<T>(p, offset + c + r * x.ld);
  };
  T* out = static_cast<T*>(out_ptr);
  for (int32_t b = 0; b < batch; ++b)
    for (int64_t j = 0; j < m; ++j)
      for (int64_t i = 0; i < n; ++i) {
        A acc = 0;
        for (int64_t kk = 0; kk < k; ++kk)
          acc += A(element(first, first_ptr, b * first_batch_stride, i, kk)) *
                 A(element(second, second_ptr, b * second_batch_stride, kk, j));
        if constexpr (std::is_same_v<T, __nv_bfloat16>) out[b * m * n + i + j * n] = __float2bfloat16(float(acc));
        else if constexpr (std::is_same_v<T, __half>) out[b * m * n + i + j * n] = __float2half(float(acc));
        else out[b * m * n + i + j * n] = T(acc);
      }
}

void lt_matmul(int, cudaStream_t, DType dtype, const LtOperand& first, const void* first_ptr,
               int64_t first_batch_stride, const LtOperand& second, const void* second_ptr,
               int64_t second_batch_stride, void* out_ptr, int64_t m, int64_t n, int32_t batch) {
  dispatch_floating(dtype, "matmul (cuda kernel)", [&](auto tag) {
    using T = decltype(tag);
    emulated_matmul<T, acc_t<T>>(first, first_ptr, first_batch_stride, second, second_ptr, second_batch_stride, out_ptr,
                                 m, n, batch);
  });
}

#endif  // MLR_CUDA_EMULATION

}  // namespace

void matmul(const Tensor& out, const Tensor& a_in, const Tensor& b_in) {
  MLR_CHECK(out.is_contiguous(), "matmul (cuda kernel): out must be contiguous, got strides {}",
            shape_str(out.strides()));
  cudaStream_t stream = device_stream(out);
  const int device = out.device().index;
  const int64_t batch = a_in.size(0), m = a_in.size(1), k = a_in.size(2), n = b_in.size(2);
  if (batch == 0 || m == 0 || n == 0) return;
  if (k == 0) {  // an empty sum: zeros
    MLR_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, out.numel() * dtype_size(out.dtype()), stream));
    return;
  }
  Tensor a = a_in, b = b_in;
  auto la = lt_operand(m, k, a.stride(1), a.stride(2));
  if (!la) {
    a = a.contiguous();
    la = lt_operand(m, k, a.stride(1), a.stride(2));
  }
  auto lb = lt_operand(k, n, b.stride(1), b.stride(2));
  if (!lb) {
    b = b.contiguous();
    lb = lt_operand(k, n, b.stride(1), b.stride(2));
  }
  const size_t elem = dtype_size(out.dtype());
  const bool broadcast = batch > 1 && (a.stride(0) == 0 || b.stride(0) == 0);
  if (!broadcast && batch <= INT32_MAX) {
    lt_matmul(device, stream, out.dtype(), *lb, b.data_ptr(), b.stride(0), *la, a.data_ptr(), a.stride(0),
              out.data_ptr(), m, n, static_cast<int32_t>(batch));
    return;
  }
  for (int64_t i = 0; i < batch; ++i) {
    const char* pa = static_cast<const char*>(a.data_ptr()) + i * a.stride(0) * elem;
    const char* pb = static_cast<const char*>(b.data_ptr()) + i * b.stride(0) * elem;
    char* pc = static_cast<char*>(out.data_ptr()) + i * m * n * elem;
    lt_matmul(device, stream, out.dtype(), *lb, pb, 0, *la, pa, 0, pc, m, n, 1);
  }
}

}  // namespace mlr::cuda

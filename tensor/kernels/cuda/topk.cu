// Top-k selection mask along the last dimension (the SMoRA router's choice of ranks), on the
// device so that selection needs no host round trip:
//   key_i = scores_i + bias_i (f64; NaN ranks below every number)
//   out_i = true for the k largest keys of the row; ties go to the lower index.
// One thread per row doing k passes of "largest key not yet taken", with the output row as the
// taken marks: rows are short (the ranks of an adapter), rows are many (tokens). Same arithmetic
// as the CPU kernel, so both select the same ranks.
#include <cmath>

#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"

namespace mlr::cuda {

namespace {

template <typename T>
__global__ void topk_mask_kernel(bool* out, const T* scores, const double* bias, int64_t rows, int64_t n, int64_t k) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows; r += int64_t(gridDim.x) * blockDim.x) {
    const T* row = scores + r * n;
    bool* taken = out + r * n;
    for (int64_t i = 0; i < n; ++i) taken[i] = false;
    for (int64_t pass = 0; pass < k; ++pass) {
      int64_t best = -1;
      double best_key = 0;
      for (int64_t i = 0; i < n; ++i) {
        if (taken[i]) continue;
        const double v = static_cast<double>(load_as<acc_t<T>>(row[i])) + (bias ? bias[i] : 0.0);
        // Strictly better only: ties keep the lower index; NaN never beats a number.
        if (best < 0 || (!isnan(v) && (isnan(best_key) || v > best_key))) {
          best = i;
          best_key = v;
        }
      }
      taken[best] = true;
    }
  }
}

}  // namespace

void topk_mask(const Tensor& out, const Tensor& scores, int64_t k, const Tensor& bias) {
  MLR_CHECK(scores.dim() == 2 && scores.is_contiguous() && out.shape() == scores.shape() &&
                out.dtype() == DType::boolean && out.is_contiguous(),
            "topk_mask (cuda kernel): expects contiguous [rows, n] scores and a bool output of that shape");
  cudaStream_t stream = device_stream(scores);
  const int64_t rows = scores.size(0), n = scores.size(1);
  constexpr int kThreads = 128;
  const double* pb = bias.defined() ? static_cast<const double*>(bias.data_ptr()) : nullptr;
  dispatch_floating(scores.dtype(), "topk_mask", [&](auto tag) {
    using T = decltype(tag);
    MLR_LAUNCH((blocks_for(rows, kThreads), kThreads, 0, stream), topk_mask_kernel<T>)(
        static_cast<bool*>(out.data_ptr()), static_cast<const T*>(scores.data_ptr()), pb, rows, n, k);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

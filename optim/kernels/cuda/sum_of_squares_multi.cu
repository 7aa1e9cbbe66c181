// The global gradient norm's sum of squares on CUDA: every gradient of a step in one pass, one copy
// of the result to the host (the step's only synchronisation for it).
//   partial[b] = sum over chunk b of g_i^2        (per thread in double, then the block's threads
//                                                   in a fixed tree: deterministic)
//   total      = sum over b of partial[b]         (one block, fixed order)
// The tensors are cut into chunks of kChunk elements; up to kItemsPerLaunch tensors travel in a
// launch's parameter space (multi_tensor.cuh), so the host uploads nothing.
#include <functional>
#include <vector>

#include "optim/kernels/cuda/multi_tensor.cuh"
#include "optim/kernels/optim_kernels.h"
#include "tensor/kernels/cuda/cuda_utils.cuh"

namespace mlr::optim_kernels {

namespace {

constexpr int64_t kChunk = 65536;
constexpr int kThreads = 256;
constexpr int kItemsPerLaunch = 128;

enum StoredType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2 };

struct SquareItem {
  const void* data;
  int64_t n;
  int32_t type;
};

using SquareLaunch = MultiTensorLaunch<SquareItem, kItemsPerLaunch>;

__device__ __forceinline__ double load_squared(const void* data, int32_t type, int64_t i) {
  float x;
  if (type == kBF16) x = __bfloat162float(static_cast<const __nv_bfloat16*>(data)[i]);
  else if (type == kF16) x = __half2float(static_cast<const __half*>(data)[i]);
  else x = static_cast<const float*>(data)[i];
  const double d = static_cast<double>(x);
  return d * d;
}

// Block b's partial goes to partial[first_block + b].
__global__ void chunk_sum_of_squares_kernel(const SquareLaunch launch, double* partial) {
  MLR_SHARED(double, scratch, [32]);
  const int32_t block = static_cast<int32_t>(blockIdx.x);
  int64_t chunk = 0;
  const SquareItem it = launch.items[launch.item_of(block, chunk)];
  const int64_t begin = chunk * kChunk;
  const int64_t end = begin + kChunk < it.n ? begin + kChunk : it.n;
  double acc = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) acc += load_squared(it.data, it.type, i);
  acc = cuda::group_reduce(acc, [](double a, double b) { return a + b; }, static_cast<int>(blockDim.x), scratch);
  if (threadIdx.x == 0) partial[launch.first_block + block] = acc;
}

__global__ void total_kernel(const double* partial, int64_t count, double* total) {
  MLR_SHARED(double, scratch, [32]);
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = cuda::group_reduce(acc, [](double a, double b) { return a + b; }, static_cast<int>(blockDim.x), scratch);
  if (threadIdx.x == 0) *total = acc;
}

}  // namespace

double sum_of_squares_multi_cuda(const std::vector<const Tensor*>& tensors) {
  std::vector<Tensor> contiguous;  // keeps the contiguous copies alive until the launches are queued
  int64_t total_chunks = 0;
  for (const Tensor* t : tensors) {
    MLR_CHECK(t->device().is_cuda() && t->device() == tensors.front()->device(),
              "sum_of_squares_multi (cuda): tensors must be on one CUDA device, got {} and {}", t->device().str(),
              tensors.front()->device().str());
    MLR_CHECK(t->dtype() == DType::f32 || t->dtype() == DType::bf16 || t->dtype() == DType::f16,
              "sum_of_squares_multi (cuda): dtype {} (expected f32, bf16 or f16)", dtype_name(t->dtype()));
    if (t->numel() == 0) continue;
    contiguous.push_back(t->contiguous());
    total_chunks += (t->numel() + kChunk - 1) / kChunk;
  }
  if (contiguous.empty()) return 0.0;
  const Device device = contiguous.front().device();
  cudaStream_t stream = cuda::device_stream(contiguous.front());
  // partial[0, total_chunks) then the total.
  const Tensor partial = empty({total_chunks + 1}, {DType::f64, device});
  double* partial_ptr = static_cast<double*>(partial.data_ptr());
  MultiTensorBatcher<SquareItem, kItemsPerLaunch, std::function<void(const SquareLaunch&, int32_t)>> batcher(
      [stream, partial_ptr](const SquareLaunch& launch, int32_t blocks) {
        MLR_LAUNCH((static_cast<unsigned int>(blocks), kThreads, 0, stream), chunk_sum_of_squares_kernel)(launch,
                                                                                                       partial_ptr);
        MLR_CUDA_CHECK_LAUNCH();
      });
  for (const Tensor& t : contiguous) {
    const int32_t type = t.dtype() == DType::bf16 ? kBF16 : t.dtype() == DType::f16 ? kF16 : kF32;
    batcher.add({t.data_ptr(), t.numel(), type}, (t.numel() + kChunk - 1) / kChunk);
  }
  batcher.finish();
  MLR_LAUNCH((1, 1024, 0, stream), total_kernel)(partial_ptr, total_chunks, partial_ptr + total_chunks);
  MLR_CUDA_CHECK_LAUNCH();
  return partial.narrow(0, total_chunks, 1).item<double>();  // the one copy to the host
}

}  // namespace mlr::optim_kernels

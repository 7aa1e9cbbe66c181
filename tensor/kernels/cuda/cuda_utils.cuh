// Shared CUDA helpers: checked calls (file and line in the message), the current stream, launch
// sizing, and dtype conversion between storage types and f32 compute.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "tensor/error.h"
#include "tensor/tensor.h"

#define MLR_CUDA_CHECK(expr)                                                                            \
  do {                                                                                                  \
    cudaError_t mlr_err_ = (expr);                                                                      \
    if (mlr_err_ != cudaSuccess)                                                                        \
      throw ::mlr::Error(::fmt::format("cuda: {} failed at {}:{}: {}", #expr, __FILE__, __LINE__,        \
                                       cudaGetErrorString(mlr_err_)));                                  \
  } while (0)

// Checks the launch that was just queued.
#define MLR_CUDA_CHECK_LAUNCH() MLR_CUDA_CHECK(cudaGetLastError())

namespace mlr::cuda {

cudaStream_t current_stream(int device);
inline cudaStream_t stream_of(const Tensor& t) { return current_stream(t.device().index); }

inline unsigned int blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned int>(b < 1 ? 1 : (b > 65535LL * 1024 ? 65535LL * 1024 : b));
}

// Storage type on the device for each host storage type (same bits).
template <typename T> struct device_type { using type = T; };
template <> struct device_type<bf16> { using type = __nv_bfloat16; };
template <> struct device_type<f16> { using type = __half; };
template <typename T> using device_t = typename device_type<T>::type;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }

}  // namespace mlr::cuda

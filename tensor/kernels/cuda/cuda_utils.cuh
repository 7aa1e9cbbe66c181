// Shared CUDA helpers: checked calls (file and line in the message), the current stream, launch
// sizing, dtype conversion between storage types and f32 compute, strided index arithmetic for
// kernels over views, and warp / block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "tensor/error.h"
#include "tensor/tensor.h"

#define MLR_CUDA_CHECK(expr)                                                                            \
  do {                                                                                                  \
    cudaError_t mlr_err_ = (expr);                                                                      \
    if (mlr_err_ != cudaSuccess)                                                                        \
      throw ::mlr::Error(::fmt::format("cuda: {} failed at {}:{}: {}", #expr, __FILE__, __LINE__,        \
                                       cudaGetErrorString(mlr_err_)));                                  \
  } while (0)

// Kernel launch: MLR_LAUNCH((grid, block, shared_bytes, stream), kernel)(args...) is
// kernel<<<grid, block, shared_bytes, stream>>>(args...), and in the emulated build (emulator.h) a
// run of the grid on the CPU.
#define MLR_LAUNCH_CONFIG(...) __VA_ARGS__
#ifdef MLR_CUDA_EMULATION
#define MLR_LAUNCH(config, ...) ::mlr::cuda_emulation::launcher(__VA_ARGS__, MLR_LAUNCH_CONFIG config)
#else
#define MLR_LAUNCH(config, ...) __VA_ARGS__<<<MLR_LAUNCH_CONFIG config>>>
#endif

// Static shared memory: MLR_SHARED(type, name, [dims]) declares `__shared__ type name[dims]`. In
// the emulated build each resident block gets its own object, poisoned and bounds-guarded
// (emulator.h).
#ifdef MLR_CUDA_EMULATION
#define MLR_SHARED(type, name, dims)        \
  static char mlr_shared_site_##name = 0;  /* its address names the declaration */ \
  auto& name = ::mlr::cuda_emulation::static_shared<type dims>(&mlr_shared_site_##name)
#else
#define MLR_SHARED(type, name, dims) __shared__ type name dims
#endif

// The dynamic shared memory of a launch, as `unsigned char name[]` (16-byte aligned).
#ifdef MLR_CUDA_EMULATION
#define MLR_DYNAMIC_SMEM(name) unsigned char* name = ::mlr::cuda_emulation::dynamic_shared_memory()
#else
#define MLR_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#endif

// Checks the launch that was just queued.
#define MLR_CUDA_CHECK_LAUNCH() MLR_CUDA_CHECK(cudaGetLastError())

namespace mlr::cuda {

cudaStream_t current_stream(int device);
inline cudaStream_t stream_of(const Tensor& t) { return current_stream(t.device().index); }

// Makes t's device the current one (kernels launch on the current device) and returns its stream.
// Every kernel entry point starts with this, so work lands on the right GPU of a multi-GPU host.
inline cudaStream_t device_stream(const Tensor& t) {
  MLR_CHECK(t.device().is_cuda(), "cuda kernel called with a tensor on {}", t.device().str());
  MLR_CUDA_CHECK(cudaSetDevice(t.device().index));
  return stream_of(t);
}

// Number of streaming multiprocessors of a device (cached): grid sizes for persistent loops.
inline int sm_count(int device) {
  static std::atomic<int> cache[64] = {};
  MLR_CHECK(device >= 0 && device < 64, "cuda: device index {} out of range", device);
  int n = cache[device].load(std::memory_order_relaxed);
  if (n == 0) {
    MLR_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
    cache[device].store(n, std::memory_order_relaxed);
  }
  return n;
}

inline unsigned int blocks_for(int64_t n, int threads) {
  int64_t b = (n + threads - 1) / threads;
  return static_cast<unsigned int>(b < 1 ? 1 : (b > 65535LL * 1024 ? 65535LL * 1024 : b));
}

// Storage type on the device for each host storage type (same bits).
template <typename T> struct device_type { using type = T; };
template <> struct device_type<bf16> { using type = __nv_bfloat16; };
template <> struct device_type<f16> { using type = __half; };
template <typename T> using device_t = typename device_type<T>::type;

// Compute type of a device storage type: f32 for the 16-bit floats and f32, f64 for f64, i64 for
// the integers and bool (as the CPU kernels).
template <typename T> struct acc_type { using type = T; };
template <> struct acc_type<__nv_bfloat16> { using type = float; };
template <> struct acc_type<__half> { using type = float; };
template <> struct acc_type<int32_t> { using type = int64_t; };
template <> struct acc_type<bool> { using type = int64_t; };
template <typename T> using acc_t = typename acc_type<T>::type;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half(x); }

// Calls f(T{}) with the device storage type of a floating dtype (f32, f64, bf16 -> __nv_bfloat16,
// f16 -> __half); other dtypes throw naming `op`.
template <typename F>
void dispatch_floating(DType t, const char* op, F&& f) {
  visit_floating(t, op, [&](auto tag) { f(device_t<decltype(tag)>{}); });
}

template <typename T> constexpr bool is_half_v = std::is_same_v<T, __nv_bfloat16> || std::is_same_v<T, __half>;

// Storage -> compute value (exact).
template <typename C, typename T>
__device__ __forceinline__ C load_as(T v) {
  if constexpr (is_half_v<T>) return static_cast<C>(to_f32(v));
  else return static_cast<C>(v);
}

// Any value -> storage type, with the CPU kernels' rules (tensor/kernels/cpu/copy.cpp): to bool is
// "!= 0" (NaN is true); to bf16/f16 rounds through f32 (to nearest even); from bf16/f16 goes through
// f32; everything else is a C++ conversion (float -> int truncates toward zero).
template <typename D, typename S>
__device__ __forceinline__ D convert(S v) {
  if constexpr (std::is_same_v<D, S>) {
    return v;
  } else if constexpr (std::is_same_v<D, bool>) {
    if constexpr (is_half_v<S>) return to_f32(v) != 0.0f;
    else return v != S(0);
  } else if constexpr (is_half_v<D>) {
    if constexpr (is_half_v<S>) return from_f32<D>(to_f32(v));
    else return from_f32<D>(static_cast<float>(v));
  } else if constexpr (is_half_v<S>) {
    return static_cast<D>(to_f32(v));
  } else {
    return static_cast<D>(v);
  }
}

template <typename A>
__device__ __forceinline__ bool is_nan(A v) {
  if constexpr (std::is_floating_point_v<A>) return v != v;
  else return false;
}

// ---- strided index arithmetic ----
// A kernel over views walks a row-major index space `sizes` (at most kMaxDims after merging); for
// each linear index it needs the element offset of every operand. Dimensions of size 1 are dropped
// and neighbours that are contiguous for every operand merged on the host (as the CPU's
// strided_loop), so most views reach the kernel with one or two dimensions.
constexpr int kMaxDims = 8;

template <int N>
struct Strided {
  int ndim = 0;
  bool small = true;  // every linear index fits 32 bits: cheaper division
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};

  // Element offsets of linear index `i` for every operand.
  __device__ __forceinline__ void offsets(int64_t i, int64_t (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
    if (ndim == 1) {
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] = i * strides[k][0];
      return;
    }
    if (small) {
      uint32_t rest = static_cast<uint32_t>(i);
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        if (d < ndim) {
          const uint32_t size = static_cast<uint32_t>(sizes[d]);
          const uint32_t q = rest / size;
          const int64_t idx = rest - q * size;
          rest = q;
#pragma unroll
          for (int k = 0; k < N; ++k) off[k] += idx * strides[k][d];
        }
      }
    } else {
      int64_t rest = i;
#pragma unroll
      for (int d = kMaxDims - 1; d >= 0; --d) {
        if (d < ndim) {
          const int64_t q = rest / sizes[d];
          const int64_t idx = rest - q * sizes[d];
          rest = q;
#pragma unroll
          for (int k = 0; k < N; ++k) off[k] += idx * strides[k][d];
        }
      }
    }
  }
};

// Merges the index space `shape` walked with per-operand `strides` (host side). Throws naming `op`
// when more than kMaxDims dimensions remain.
template <int N>
Strided<N> make_strided(const Shape& shape, const std::array<const Shape*, N>& strides, const char* op) {
  Strided<N> s;
  int64_t numel = 1;
  for (size_t d = 0; d < shape.size(); ++d) {
    numel *= shape[d];
    if (shape[d] == 1) continue;
    bool merge = s.ndim > 0;
    for (int k = 0; k < N && merge; ++k) merge = s.strides[k][s.ndim - 1] == (*strides[k])[d] * shape[d];
    if (merge) {
      s.sizes[s.ndim - 1] *= shape[d];
      for (int k = 0; k < N; ++k) s.strides[k][s.ndim - 1] = (*strides[k])[d];
      continue;
    }
    MLR_CHECK(s.ndim < kMaxDims, "{}: the CUDA kernels handle at most {} non-mergeable dimensions, got shape {}", op,
              kMaxDims, shape_str(shape));
    s.sizes[s.ndim] = shape[d];
    for (int k = 0; k < N; ++k) s.strides[k][s.ndim] = (*strides[k])[d];
    ++s.ndim;
  }
  if (s.ndim == 0) {  // a scalar or all-ones shape: one element at offset 0
    s.ndim = 1;
    s.sizes[0] = 1;
  }
  s.small = numel < (int64_t{1} << 31);
  return s;
}

// ---- reductions within a warp, a block, or a "group" of threads sharing one row ----
// Butterfly exchange within a warp. Kernels that reduce small structs (a value and an index, a
// running max and sum) overload shfl_xor for them next to the struct; warp_reduce finds the
// overload by argument-dependent lookup.
template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int lane_mask) {
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
}

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op(v, shfl_xor(v, o));
  return v;
}

// Reduces v over a group of `group` threads that work on one row: 1 (nothing to do), 32 (one warp)
// or blockDim.x (the whole block; needs `scratch` with room for 32 values, and every thread of the
// block must call it). Every thread of the group gets the result.
template <typename T, typename Op>
__device__ __forceinline__ T group_reduce(T v, Op op, int group, T* scratch) {
  if (group == 1) return v;
  v = warp_reduce(v, op);
  if (group == 32) return v;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
  for (int w = 1; w < warps; ++w) r = op(r, scratch[w]);
  return r;
}

// Threads per group for a row of n elements: whole blocks for long rows, a warp for shorter ones,
// one thread when the rows are strided along the reduced dimension (neighbouring threads then read
// neighbouring rows, which coalesces).
inline int row_group_size(int64_t n, bool contiguous_rows, int block) {
  if (!contiguous_rows && n <= 4096) return 1;
  return n >= 2048 ? block : 32;
}

// ---- 16-byte vector access ----
template <typename T>
struct alignas(16) Vec16 {
  static constexpr int size = 16 / sizeof(T);
  T v[size];
};

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

}  // namespace mlr::cuda

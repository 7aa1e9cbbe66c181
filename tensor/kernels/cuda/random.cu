// Philox draws into a contiguous tensor: element i = f(seed, offset, i) (tensor/philox.h), the same
// function the CPU kernel evaluates (tensor/kernels/cpu/random.cpp):
//   uniform: low + span * double(u_i), rounded to the dtype (through f32 for bf16/f16)
//   normal:  mean + std * double(z_i)
// The affine step is written with __dmul_rn / __dadd_rn so nvcc cannot fuse it into an FMA: the
// host computes a rounded product then a rounded sum, and uniform draws must match it bit for bit.
// (Normal draws go through logf/cosf, whose last bits differ between the host libm and CUDA, so
// they agree to ~1e-6 relative, not bitwise.)
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/philox.h"

namespace mlr::cuda {

namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ __forceinline__ T store_draw(double v) {
  if constexpr (std::is_same_v<T, double>) return v;
  else return from_f32<T>(static_cast<float>(v));
}

template <typename T, bool normal>
__global__ void random_kernel(T* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset, double a, double b) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const uint64_t k = static_cast<uint64_t>(i);
    const float u = normal ? philox::normal(seed, offset, k) : philox::uniform(seed, offset, k);
    out[i] = store_draw<T>(__dadd_rn(a, __dmul_rn(b, static_cast<double>(u))));
  }
}

template <bool normal>
void fill_random(const char* op, const Tensor& dst, uint64_t seed, uint64_t offset, double a, double b) {
  MLR_CHECK(dst.is_contiguous(), "{}: destination must be contiguous (shape {}, strides {})", op,
            shape_str(dst.shape()), shape_str(dst.strides()));
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(dst);
  visit_floating(dst.dtype(), op, [&](auto tag) {
    using T = device_t<decltype(tag)>;
    MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), random_kernel<T, normal>)(static_cast<T*>(dst.data_ptr()), n,
                                                                               seed, offset, a, b);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void random_uniform(const Tensor& dst, uint64_t seed, uint64_t offset, double low, double high) {
  fill_random<false>("random_uniform", dst, seed, offset, low, high - low);
}

void random_normal(const Tensor& dst, uint64_t seed, uint64_t offset, double mean, double std) {
  fill_random<true>("random_normal", dst, seed, offset, mean, std);
}

}  // namespace mlr::cuda

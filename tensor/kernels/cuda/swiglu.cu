// SwiGLU, elementwise over contiguous tensors: h = silu(gate) * up, s = sigmoid(gate)
//   dgate = dh * up * s * (1 + gate (1 - s)),  dup = dh * silu(gate)
// f32 arithmetic (f64 for f64), one rounding per output, as the CPU reference
// (tensor/kernels/cpu/swiglu.cpp). 16-byte vector loads and stores when every pointer is aligned
// and the element count is a multiple of the vector width; a scalar loop otherwise.
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cuda {

namespace {

__device__ __forceinline__ float sigmoid_of(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double sigmoid_of(double x) { return 1.0 / (1.0 + exp(-x)); }

template <typename T>
struct SwigluForward {
  __device__ __forceinline__ void operator()(T& h, T g, T u) const {
    using A = acc_t<T>;
    const A gv = load_as<A>(g);
    h = convert<T>(gv * sigmoid_of(gv) * load_as<A>(u));
  }
};

template <typename T>
struct SwigluBackward {
  __device__ __forceinline__ void operator()(T& dg, T& du, T dh, T g, T u) const {
    using A = acc_t<T>;
    const A gv = load_as<A>(g), uv = load_as<A>(u), d = load_as<A>(dh);
    const A s = sigmoid_of(gv);
    dg = convert<T>(d * uv * s * (A(1) + gv * (A(1) - s)));
    du = convert<T>(d * gv * s);
  }
};

template <typename T>
__global__ void swiglu_forward_kernel(T* h, const T* gate, const T* up, int64_t n, bool vectorized) {
  SwigluForward<T> f;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (vectorized) {
    using V = Vec16<T>;
    for (; i < n / V::size; i += stride) {
      V g = reinterpret_cast<const V*>(gate)[i], u = reinterpret_cast<const V*>(up)[i], o;
#pragma unroll
      for (int k = 0; k < V::size; ++k) f(o.v[k], g.v[k], u.v[k]);
      reinterpret_cast<V*>(h)[i] = o;
    }
  } else {
    for (; i < n; i += stride) f(h[i], gate[i], up[i]);
  }
}

template <typename T>
__global__ void swiglu_backward_kernel(T* dgate, T* dup, const T* dh, const T* gate, const T* up, int64_t n,
                                       bool vectorized) {
  SwigluBackward<T> f;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (vectorized) {
    using V = Vec16<T>;
    for (; i < n / V::size; i += stride) {
      V d = reinterpret_cast<const V*>(dh)[i], g = reinterpret_cast<const V*>(gate)[i],
        u = reinterpret_cast<const V*>(up)[i], og, ou;
#pragma unroll
      for (int k = 0; k < V::size; ++k) f(og.v[k], ou.v[k], d.v[k], g.v[k], u.v[k]);
      reinterpret_cast<V*>(dgate)[i] = og;
      reinterpret_cast<V*>(dup)[i] = ou;
    }
  } else {
    for (; i < n; i += stride) f(dgate[i], dup[i], dh[i], gate[i], up[i]);
  }
}

template <typename T>
bool can_vectorize(int64_t n, std::initializer_list<const Tensor*> tensors) {
  if (n % Vec16<T>::size != 0) return false;
  for (const Tensor* t : tensors)
    if (!aligned16(t->data_ptr())) return false;
  return true;
}

unsigned int grid_for(int64_t work, int threads, int device) {
  const int64_t cap = int64_t(sm_count(device)) * 8;
  int64_t b = (work + threads - 1) / threads;
  return static_cast<unsigned int>(b < 1 ? 1 : (b > cap ? cap : b));
}

}  // namespace

void swiglu_forward(const Tensor& h, const Tensor& gate, const Tensor& up) {
  check_kernel_contiguous("swiglu_forward", "cuda", {&h, &gate, &up});
  cudaStream_t stream = device_stream(h);
  const int64_t n = h.numel();
  if (n == 0) return;
  dispatch_floating(h.dtype(), "swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = can_vectorize<T>(n, {&h, &gate, &up});
    constexpr int kThreads = 256;
    MLR_LAUNCH((grid_for(vec ? n / Vec16<T>::size : n, kThreads, h.device().index), kThreads, 0, stream), swiglu_forward_kernel<T>)(
        static_cast<T*>(h.data_ptr()), static_cast<const T*>(gate.data_ptr()), static_cast<const T*>(up.data_ptr()), n,
        vec);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void swiglu_backward(const Tensor& dh, const Tensor& gate, const Tensor& up, const Tensor& dgate, const Tensor& dup) {
  check_kernel_contiguous("swiglu_backward", "cuda", {&dh, &gate, &up, &dgate, &dup});
  cudaStream_t stream = device_stream(gate);
  const int64_t n = gate.numel();
  if (n == 0) return;
  dispatch_floating(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    const bool vec = can_vectorize<T>(n, {&dh, &gate, &up, &dgate, &dup});
    constexpr int kThreads = 256;
    MLR_LAUNCH((grid_for(vec ? n / Vec16<T>::size : n, kThreads, gate.device().index), kThreads, 0,
                                stream), swiglu_backward_kernel<T>)(static_cast<T*>(dgate.data_ptr()), static_cast<T*>(dup.data_ptr()),
                                          static_cast<const T*>(dh.data_ptr()), static_cast<const T*>(gate.data_ptr()),
                                          static_cast<const T*>(up.data_ptr()), n, vec);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

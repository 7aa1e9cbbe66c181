// Strided copy with dtype conversion, and fill. Conversions follow the CPU kernels
// (tensor/kernels/cpu/copy.cpp): through the compute type, float -> int truncates toward zero,
// anything -> bool is "!= 0".
//
// Same dtype and both contiguous: one cudaMemcpyAsync. Same dtype otherwise: a kernel that moves
// raw 1/2/4/8-byte elements. Different dtypes: a kernel per (destination, source) pair, each a
// grid-stride loop over the merged index space (cuda_utils.cuh: Strided).
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"

namespace mlr::cuda {

namespace {

constexpr int kThreads = 256;

template <typename D, typename S>
__global__ void copy_kernel(D* __restrict__ dst, const S* __restrict__ src, Strided<2> idx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[2];
    idx.offsets(i, off);
    dst[off[0]] = convert<D>(src[off[1]]);
  }
}

// Raw elements of `bytes` bytes.
template <typename Bits>
__global__ void fill_kernel(Bits* __restrict__ dst, Bits value, Strided<1> idx, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    int64_t off[1];
    idx.offsets(i, off);
    dst[off[0]] = value;
  }
}

template <size_t Bytes> struct bits_of;
template <> struct bits_of<1> { using type = uint8_t; };
template <> struct bits_of<2> { using type = uint16_t; };
template <> struct bits_of<4> { using type = uint32_t; };
template <> struct bits_of<8> { using type = uint64_t; };

// Calls f(Bits{}) with the unsigned integer type of the dtype's size.
template <typename F>
void visit_bits(DType t, F&& f) {
  switch (dtype_size(t)) {
    case 1: return f(uint8_t{});
    case 2: return f(uint16_t{});
    case 4: return f(uint32_t{});
    case 8: return f(uint64_t{});
  }
  throw Error(fmt::format("copy: unexpected element size of dtype {}", t));
}

// The host-side value of a fill, as the CPU's conversion of a double.
template <typename T>
T host_convert(double v) {
  if constexpr (std::is_same_v<T, bool>) return v != 0.0;  // NaN != 0: true, as on the CPU
  else if constexpr (std::is_same_v<T, bf16> || std::is_same_v<T, f16>) return T(static_cast<float>(v));
  else return static_cast<T>(v);
}

}  // namespace

void copy(const Tensor& dst, const Tensor& src) {
  MLR_CHECK(dst.shape() == src.shape(), "copy: shapes {} and {} differ", shape_str(dst.shape()), shape_str(src.shape()));
  MLR_CHECK(dst.device() == src.device(), "copy (cuda kernel): dst on {} but src on {}", dst.device().str(),
            src.device().str());
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(dst);
  if (dst.dtype() == src.dtype() && dst.is_contiguous() && src.is_contiguous()) {
    if (dst.data_ptr() != src.data_ptr())
      MLR_CUDA_CHECK(cudaMemcpyAsync(dst.data_ptr(), src.data_ptr(), dst.nbytes(), cudaMemcpyDeviceToDevice, stream));
    return;
  }
  const Strided<2> idx = make_strided<2>(dst.shape(), {&dst.strides(), &src.strides()}, "copy");
  const unsigned int blocks = blocks_for(n, kThreads);
  if (dst.dtype() == src.dtype()) {
    visit_bits(dst.dtype(), [&](auto bits) {
      using B = decltype(bits);
      MLR_LAUNCH((blocks, kThreads, 0, stream), copy_kernel<B, B>)(static_cast<B*>(dst.data_ptr()),
                                                         static_cast<const B*>(src.data_ptr()), idx, n);
      MLR_CUDA_CHECK_LAUNCH();
    });
    return;
  }
  visit_dtype(dst.dtype(), [&](auto d) {
    using D = device_t<decltype(d)>;
    visit_dtype(src.dtype(), [&](auto s) {
      using S = device_t<decltype(s)>;
      if constexpr (!std::is_same_v<D, S>) {  // same dtypes took the raw path above
        MLR_LAUNCH((blocks, kThreads, 0, stream), copy_kernel<D, S>)(static_cast<D*>(dst.data_ptr()),
                                                           static_cast<const S*>(src.data_ptr()), idx, n);
        MLR_CUDA_CHECK_LAUNCH();
      }
    });
  });
}

void fill(const Tensor& dst, double value) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  cudaStream_t stream = device_stream(dst);
  const Strided<1> idx = make_strided<1>(dst.shape(), {&dst.strides()}, "fill");
  visit_dtype(dst.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T v = host_convert<T>(value);
    using B = typename bits_of<sizeof(T)>::type;
    B bits;
    std::memcpy(&bits, &v, sizeof(T));
    MLR_LAUNCH((blocks_for(n, kThreads), kThreads, 0, stream), fill_kernel<B>)(static_cast<B*>(dst.data_ptr()), bits, idx, n);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

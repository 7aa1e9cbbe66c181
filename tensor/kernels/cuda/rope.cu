// Rotary position embedding on x [batch, seq, heads, d], pair i < d/2 rotated by the angle whose
// cos/sin are cos[(batch,) pos, i], sin[(batch,) pos, i]:
//   half layout (Hugging Face rotate_half): (x1, x2) = (x[i], x[i + d/2])
//   interleaved layout:                     (x1, x2) = (x[2i], x[2i + 1])
//   forward:  y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin
//   backward: the rotation by -theta:  dx1 = dy1 cos + dy2 sin,  dx2 = dy2 cos - dy1 sin
// Tables: angle = float(position) * inv_freq[i] in f32, cos and sin of it (as Hugging Face and the
// CPU reference, tensor/kernels/cpu/rope.cpp). All tensors contiguous; math in f32 (f64 for f64).
//
// One thread per pair (token, head, i): the cos/sin row of a token is read once per head from L2,
// x is read and y written once, so the kernel moves 2 * numel elements plus the tables.
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cuda {

namespace {

// pairs = batch * seq * heads * half; the table row of a token is (b * seq + s) when per_batch,
// else s.
template <typename T, typename C>
__global__ void rope_kernel(T* out, const T* in, const C* cos, const C* sin, int64_t pairs, int64_t seq,
                            int64_t heads, int64_t half, bool per_batch, bool interleaved, int sign) {
  using A = acc_t<T>;
  for (int64_t p = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; p < pairs; p += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = p % half;
    const int64_t token_head = p / half;  // (b * seq + s) * heads + h
    const int64_t token = token_head / heads;
    const int64_t table_row = per_batch ? token : token % seq;
    const A c = static_cast<A>(cos[table_row * half + i]);
    const A sn = static_cast<A>(sin[table_row * half + i]) * static_cast<A>(sign);
    const int64_t base = token_head * 2 * half;
    const int64_t o1 = base + (interleaved ? 2 * i : i), o2 = base + (interleaved ? 2 * i + 1 : i + half);
    const A x1 = load_as<A>(in[o1]), x2 = load_as<A>(in[o2]);
    out[o1] = convert<T>(x1 * c - x2 * sn);
    out[o2] = convert<T>(x2 * c + x1 * sn);
  }
}

template <typename P>
__global__ void rope_tables_kernel(const P* positions, const float* inv_freq, float* cos, float* sin, int64_t n,
                                   int64_t half) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n * half; k += int64_t(gridDim.x) * blockDim.x) {
    const float angle = static_cast<float>(positions[k / half]) * inv_freq[k % half];
    cos[k] = cosf(angle);
    sin[k] = sinf(angle);
  }
}

void rotate(const char* op, const Tensor& out, const Tensor& in, const Tensor& cos, const Tensor& sin,
            RopeLayout layout, int sign) {
  check_kernel_contiguous(op, "cuda", {&out, &in, &cos, &sin});
  cudaStream_t stream = device_stream(in);
  const int64_t seq = in.size(1), heads = in.size(2), half = in.size(3) / 2;
  const int64_t pairs = in.numel() / 2;
  if (pairs == 0) return;
  const bool per_batch = cos.dim() == 3;
  dispatch_floating(in.dtype(), op, [&](auto tag) {
    using T = decltype(tag);
    visit_floating(cos.dtype(), "rope tables", [&](auto table_tag) {
      using C = decltype(table_tag);
      if constexpr (std::is_same_v<C, float> || std::is_same_v<C, double>) {
        constexpr int kThreads = 256;
        MLR_LAUNCH((blocks_for(pairs, kThreads), kThreads, 0, stream), rope_kernel<T, C>)(
            static_cast<T*>(out.data_ptr()), static_cast<const T*>(in.data_ptr()),
            static_cast<const C*>(cos.data_ptr()), static_cast<const C*>(sin.data_ptr()), pairs, seq, heads, half,
            per_batch, layout == RopeLayout::interleaved, sign);
        MLR_CUDA_CHECK_LAUNCH();
      } else {
        MLR_CHECK(false, "{} (cuda kernel): cos/sin tables must be f32 or f64, got {}", op, cos.dtype());
      }
    });
  });
}

}  // namespace

void rope_forward(const Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  rotate("rope_forward", y, x, cos, sin, layout, +1);
}

void rope_backward(const Tensor& dx, const Tensor& dy, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  rotate("rope_backward", dx, dy, cos, sin, layout, -1);
}

void rope_tables(const Tensor& positions, const Tensor& inv_freq, const Tensor& cos, const Tensor& sin) {
  check_kernel_contiguous("rope_tables", "cuda", {&positions, &inv_freq, &cos, &sin});
  cudaStream_t stream = device_stream(cos);
  const int64_t n = positions.numel(), half = inv_freq.numel();
  if (n * half == 0) return;
  constexpr int kThreads = 256;
  auto launch = [&](auto* pos) {
    using P = std::remove_const_t<std::remove_pointer_t<decltype(pos)>>;
    MLR_LAUNCH((blocks_for(n * half, kThreads), kThreads, 0, stream), rope_tables_kernel<P>)(
        pos, static_cast<const float*>(inv_freq.data_ptr()), static_cast<float*>(cos.data_ptr()),
        static_cast<float*>(sin.data_ptr()), n, half);
    MLR_CUDA_CHECK_LAUNCH();
  };
  if (positions.dtype() == DType::i32) launch(static_cast<const int32_t*>(positions.data_ptr()));
  else launch(static_cast<const int64_t*>(positions.data_ptr()));
}

}  // namespace mlr::cuda

// Host side of the tensor-core flash attention (kernels and their description in
// attention_flash.cuh): support checks, shared-memory limits, launches.
#include <atomic>
#include <initializer_list>
#include <mutex>

#include "tensor/kernels/cuda/attention_flash.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/kernel_checks.h"

namespace mlr::cuda {

namespace {

// Calls f(T{}, integral_constant<D>) for the supported dtypes and head dims.
template <typename F>
void dispatch_flash(DType dtype, int64_t dim, F&& f) {
  auto with_dim = [&](auto tag) {
    if (dim == 64) f(tag, std::integral_constant<int, 64>{});
    else f(tag, std::integral_constant<int, 128>{});
  };
  if (dtype == DType::bf16) with_dim(__nv_bfloat16{});
  else with_dim(__half{});
}

constexpr int kMaxDevices = 64;

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

int compute_capability_major(int device) {
  MLR_CHECK(device >= 0 && device < kMaxDevices, "cuda: device index {} out of range", device);
  static std::atomic<int> cache[kMaxDevices] = {};
  int major = cache[device].load(std::memory_order_relaxed);
  if (major == 0) {
    MLR_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    cache[device].store(major, std::memory_order_relaxed);
  }
  return major;
}

// Raises a kernel's dynamic shared-memory limit past the default 48 KiB, once per device (the
// attribute belongs to the device's context; the launch path then pays nothing).
template <auto kernel>
void allow_smem(size_t bytes, int device) {
  static std::once_flag done[kMaxDevices];  // per kernel (template argument) and device
  MLR_CHECK(device >= 0 && device < kMaxDevices, "cuda: device index {} out of range", device);
  std::call_once(done[device], [&] {
    MLR_CUDA_CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
  });
}

// The checks both entry points make, and the packed-document lengths as i32 on the device.
Tensor checked_documents(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu_seqlens,
                         std::initializer_list<const Tensor*> outputs) {
  bool aligned = flash_attention_supports(q, k, v);
  for (const Tensor* t : outputs) aligned = aligned && aligned16(*t);
  MLR_CHECK(aligned,
            "{}: needs bf16/f16 tensors with head dim 64 or 128, 16-byte aligned, on sm_80 or newer (got {}, head "
            "dim {})",
            op, dtype_name(q.dtype()), q.size(3));
  return cu_seqlens.defined() ? cu_seqlens.to(DType::i32).contiguous() : Tensor();
}

}  // namespace

bool flash_attention_supports(const Tensor& q, const Tensor& k, const Tensor& v) {
  const DType t = q.dtype();
  if (t != DType::bf16 && t != DType::f16) return false;
  if (q.dim() != 4 || (q.size(3) != 64 && q.size(3) != 128)) return false;
  if (q.size(0) * q.size(2) > 65535) return false;  // batch x heads is grid.y
  if (!q.device().is_cuda() || compute_capability_major(q.device().index) < 8) return false;
  return aligned16(q) && aligned16(k) && aligned16(v);
}

void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                             const Tensor& cu_seqlens, const Tensor& out, const Tensor& lse) {
  const char* op = "flash_attention_forward";
  check_kernel_contiguous(op, "cuda", {&q, &k, &v, &out, &lse});
  cudaStream_t stream = device_stream(q);
  const Tensor cu = checked_documents(op, q, k, v, cu_seqlens, {&out});
  const Geometry geo = geometry_of(q, k, cu);
  if (geo.batch * geo.heads * geo.seq == 0) return;
  const float scale_log2 = float(scale) * kLog2e;
  const dim3 grid(row_tiles(geo), unsigned(geo.batch * geo.heads));
  dispatch_flash(q.dtype(), q.size(3), [&](auto tag, auto dim) {
    using T = decltype(tag);
    constexpr int D = decltype(dim)::value;
    allow_smem<flash_forward_kernel<T, D>>(kForwardSmem<D>, q.device().index);
    MLR_LAUNCH((grid, kThreads, kForwardSmem<D>, stream), flash_forward_kernel<T, D>)(
        static_cast<const T*>(q.data_ptr()), static_cast<const T*>(k.data_ptr()), static_cast<const T*>(v.data_ptr()),
        static_cast<T*>(out.data_ptr()), static_cast<float*>(lse.data_ptr()), geo, scale_log2);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

void flash_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, double scale, const Tensor& cu_seqlens,
                              const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  const char* op = "flash_attention_backward";
  check_kernel_contiguous(op, "cuda", {&dout, &q, &k, &v, &out, &lse, &dq, &dk, &dv});
  cudaStream_t stream = device_stream(q);
  const Tensor cu = checked_documents(op, q, k, v, cu_seqlens, {&dout, &dq, &dk, &dv});
  const Geometry geo = geometry_of(q, k, cu);
  const int64_t q_rows = geo.batch * geo.heads * geo.seq;
  if (q_rows == 0) return;
  Tensor dsum = empty_like(lse);
  const float scale_f = float(scale), scale_log2 = float(scale) * kLog2e;
  const unsigned tiles = row_tiles(geo);
  dispatch_flash(q.dtype(), q.size(3), [&](auto tag, auto dim) {
    using T = decltype(tag);
    constexpr int D = decltype(dim)::value;
    const T* pdout = static_cast<const T*>(dout.data_ptr());
    const T* pq = static_cast<const T*>(q.data_ptr());
    const T* pk = static_cast<const T*>(k.data_ptr());
    const T* pv = static_cast<const T*>(v.data_ptr());
    const float* plse = static_cast<const float*>(lse.data_ptr());
    float* pdsum = static_cast<float*>(dsum.data_ptr());
    const int64_t wanted = (q_rows + kWarps - 1) / kWarps, cap = int64_t(sm_count(q.device().index)) * 32;
    MLR_LAUNCH((unsigned(std::max<int64_t>(1, std::min(wanted, cap))), kThreads, 0, stream), flash_dsum_kernel<T, D>)(
        pdout, static_cast<const T*>(out.data_ptr()), pdsum, geo);
    MLR_CUDA_CHECK_LAUNCH();
    allow_smem<flash_dkv_kernel<T, D>>(kDkvSmem<D>, q.device().index);
    MLR_LAUNCH((dim3(tiles, unsigned(geo.batch * geo.kv_heads)), kThreads, kDkvSmem<D>, stream), flash_dkv_kernel<T, D>)(
        pdout, pq, pk, pv, plse, pdsum, static_cast<T*>(dk.data_ptr()), static_cast<T*>(dv.data_ptr()), geo, scale_f,
        scale_log2);
    MLR_CUDA_CHECK_LAUNCH();
    allow_smem<flash_dq_kernel<T, D>>(kDqSmem<D>, q.device().index);
    MLR_LAUNCH((dim3(tiles, unsigned(geo.batch * geo.heads)), kThreads, kDqSmem<D>, stream), flash_dq_kernel<T, D>)(
        pdout, pq, pk, pv, plse, pdsum, static_cast<T*>(dq.data_ptr()), geo, scale_f, scale_log2);
    MLR_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace mlr::cuda

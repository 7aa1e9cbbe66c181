// Host side of the tensor-core flash attention (kernels and their description in
// attention_flash.cuh): support checks, the tile configuration that fits the device's shared memory
// (arch_limits.h), launches.
#include <atomic>
#include <initializer_list>
#include <mutex>
#include <string>

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

// Calls f(integral_constant<KT>) for a key tile of flash::kKeyTiles.
template <typename F>
void dispatch_key_tile(int key_tile, F&& f) {
  if (key_tile == 64) f(std::integral_constant<int, 64>{});
  else f(std::integral_constant<int, 32>{});
}

constexpr int kMaxDevices = 64;

bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

// What the flash kernels need to know of a device: its compute capability and how much shared
// memory a block may use with the opt-in attribute. Cached per device (the attribute queries are
// driver calls); the emulated device's properties change between tests, so there it is asked
// each time.
struct DeviceLimits {
  int major = 0;
  size_t smem_optin = 0;
};

DeviceLimits query_limits(int device) {
  int major = 0, smem = 0;
  MLR_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  MLR_CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  return {major, size_t(smem)};
}

DeviceLimits device_limits(int device) {
  MLR_CHECK(device >= 0 && device < kMaxDevices, "cuda: device index {} out of range", device);
#ifdef MLR_CUDA_EMULATION
  return query_limits(device);
#else
  static std::once_flag done[kMaxDevices];
  static DeviceLimits cache[kMaxDevices];
  std::call_once(done[device], [&] { cache[device] = query_limits(device); });
  return cache[device];
#endif
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
  std::string why = flash_attention_unsupported_reason(q, k, v);
  for (const Tensor* t : outputs)
    if (why.empty() && !aligned16(*t)) why = "an output tensor is not 16-byte aligned";
  MLR_CHECK(why.empty(), "{}: the flash kernel cannot run: {}", op, why);
  return cu_seqlens.defined() ? cu_seqlens.to(DType::i32).contiguous() : Tensor();
}

// The key tile of `kernel` at head dim D on q's device (flash_attention_supports made sure one fits).
int key_tile_on(const Tensor& q, flash::Kernel kernel, int dim) {
  return flash::key_tile_for(kernel, dim, device_limits(q.device().index).smem_optin);
}

}  // namespace

std::string flash_attention_unsupported_reason(const Tensor& q, const Tensor& k, const Tensor& v) {
  const DType t = q.dtype();
  if (t != DType::bf16 && t != DType::f16) return fmt::format("dtype {} (it takes bf16 or f16)", dtype_name(t));
  if (q.dim() != 4) return fmt::format("q has {} dimensions (it takes [batch, seq, heads, head dim])", q.dim());
  if (q.size(3) != 64 && q.size(3) != 128) return fmt::format("head dim {} (it takes 64 or 128)", q.size(3));
  if (!q.device().is_cuda()) return fmt::format("q is on {}", q.device().str());
  const DeviceLimits limits = device_limits(q.device().index);
  if (limits.major < 8) return fmt::format("compute capability {}.x (it needs sm_80 or newer)", limits.major);
  const int dim = int(q.size(3));
  for (flash::Kernel kernel : {flash::Kernel::forward, flash::Kernel::dq, flash::Kernel::dkv})
    if (flash::key_tile_for(kernel, dim, limits.smem_optin) == 0)
      return fmt::format("the device allows {} B of shared memory per block, less than any tile configuration at "
                         "head dim {} needs",
                         limits.smem_optin, dim);
  if (!aligned16(q) || !aligned16(k) || !aligned16(v)) return "q, k or v is not 16-byte aligned";
  return {};
}

bool flash_attention_supports(const Tensor& q, const Tensor& k, const Tensor& v) {
  return flash_attention_unsupported_reason(q, k, v).empty();
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
  const std::pair<unsigned, unsigned> yz = batch_heads_grid(geo.batch * geo.heads);
  const dim3 grid(row_tiles(geo), yz.first, yz.second);
  const int dim = int(q.size(3));
  dispatch_flash(q.dtype(), dim, [&](auto tag, auto dim_constant) {
    using T = decltype(tag);
    constexpr int D = decltype(dim_constant)::value;
    dispatch_key_tile(key_tile_on(q, flash::Kernel::forward, D), [&](auto key_tile) {
      constexpr int KT = decltype(key_tile)::value;
      constexpr size_t smem = flash::forward_smem(D, KT);
      allow_smem<flash_forward_kernel<T, D, KT>>(smem, q.device().index);
      MLR_LAUNCH((grid, kThreads, smem, stream), flash_forward_kernel<T, D, KT>)(
          static_cast<const T*>(q.data_ptr()), static_cast<const T*>(k.data_ptr()),
          static_cast<const T*>(v.data_ptr()), static_cast<T*>(out.data_ptr()), static_cast<float*>(lse.data_ptr()),
          geo, scale_log2);
      MLR_CUDA_CHECK_LAUNCH();
    });
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
    constexpr size_t dkv_bytes = flash::dkv_smem(D);
    allow_smem<flash_dkv_kernel<T, D>>(dkv_bytes, q.device().index);
    const std::pair<unsigned, unsigned> kv_yz = batch_heads_grid(geo.batch * geo.kv_heads);
    MLR_LAUNCH((dim3(tiles, kv_yz.first, kv_yz.second), kThreads, dkv_bytes, stream), flash_dkv_kernel<T, D>)(
        pdout, pq, pk, pv, plse, pdsum, static_cast<T*>(dk.data_ptr()), static_cast<T*>(dv.data_ptr()), geo, scale_f,
        scale_log2);
    MLR_CUDA_CHECK_LAUNCH();
    dispatch_key_tile(key_tile_on(q, flash::Kernel::dq, D), [&](auto key_tile) {
      constexpr int KT = decltype(key_tile)::value;
      constexpr size_t dq_bytes = flash::dq_smem(D, KT);
      allow_smem<flash_dq_kernel<T, D, KT>>(dq_bytes, q.device().index);
      const std::pair<unsigned, unsigned> q_yz = batch_heads_grid(geo.batch * geo.heads);
      MLR_LAUNCH((dim3(tiles, q_yz.first, q_yz.second), kThreads, dq_bytes, stream), flash_dq_kernel<T, D, KT>)(
          pdout, pq, pk, pv, plse, pdsum, static_cast<T*>(dq.data_ptr()), geo, scale_f, scale_log2);
      MLR_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace mlr::cuda

// The fused multi-tensor AdamW update on CUDA: one kernel launch updates up to kItemsPerLaunch
// parameters. The host lists the parameters (pointers, sizes, per-parameter scalars) and cuts each
// into chunks of kChunk elements; each block updates one chunk. The list travels in the kernel's
// parameter space (multi_tensor.cuh), so a step needs no upload and no synchronisation: the
// launches queue behind the backward like any kernel. Per element the arithmetic is the CPU reference's
// (optim/kernels/cpu/optim_kernels.cpp, stated in optim_kernels.h), operation by operation with
// round-to-nearest intrinsics, so nvcc's automatic multiply-add contraction cannot change a
// rounding: the fused multiply-adds are exactly where the reference (and torch) fuse.
//   p  = p * (1 - lr * wd)                         (skipped when wd == 0)
//   m  = fma(w, g - m, m)  or  fma(w - 1, g - m, g)   (torch's lerp, w = 1 - beta1)
//   v  = fma((1 - beta2) * g, g, v * beta2)
//   p  = p + (-lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)
// Master weights and moments are f32; the gradient f32, bf16 or f16; when the parameter itself is
// bf16/f16 the kernel also writes its rounded copy, so no second pass is needed.
#include <cmath>
#include <functional>
#include <vector>

#include "optim/kernels/optim_kernels.h"
#include "optim/kernels/cuda/multi_tensor.cuh"
#include "tensor/kernels/cuda/cuda_utils.cuh"

namespace mlr::optim_kernels {

namespace {

constexpr int64_t kChunk = 65536;
constexpr int kThreads = 512;

enum StoredType : int32_t { kF32 = 0, kBF16 = 1, kF16 = 2, kNone = 3 };

struct Item {
  float* p;
  float* m;
  float* v;
  const void* g;
  void* out;  // the low-precision parameter, or null
  int64_t n;
  int32_t g_type, out_type;
  float decay, m_weight, beta2, v_weight, neg_step, bc2_sqrt, eps;
  int32_t lerp_small, apply_decay;
};

constexpr int kItemsPerLaunch = 32;  // 32 Items of 96 bytes fit the 4 KiB parameter space
using AdamWLaunch = MultiTensorLaunch<Item, kItemsPerLaunch>;

StoredType stored_type(DType t, const char* what) {
  switch (t) {
    case DType::f32: return kF32;
    case DType::bf16: return kBF16;
    case DType::f16: return kF16;
    default: MLR_CHECK(false, "adamw (cuda): {} has dtype {}, expected f32, bf16 or f16", what, dtype_name(t));
  }
  return kNone;
}

__device__ __forceinline__ float load_grad(const void* g, int32_t type, int64_t i) {
  if (type == kBF16) return __bfloat162float(static_cast<const __nv_bfloat16*>(g)[i]);
  if (type == kF16) return __half2float(static_cast<const __half*>(g)[i]);
  return static_cast<const float*>(g)[i];
}

__global__ void adamw_multi_kernel(const AdamWLaunch launch) {
  int64_t chunk = 0;
  // A register copy of the item: the stores below cannot alias it.
  const Item it = launch.items[launch.item_of(static_cast<int32_t>(blockIdx.x), chunk)];
  const int64_t begin = chunk * kChunk;
  const int64_t end = begin + kChunk < it.n ? begin + kChunk : it.n;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float g = load_grad(it.g, it.g_type, i);
    float param = it.p[i];
    if (it.apply_decay) param = __fmul_rn(param, it.decay);
    const float m_old = it.m[i];
    const float diff = __fsub_rn(g, m_old);
    const float m = it.lerp_small ? __fmaf_rn(it.m_weight, diff, m_old) : __fmaf_rn(__fsub_rn(it.m_weight, 1.0f), diff, g);
    const float v = __fmaf_rn(__fmul_rn(it.v_weight, g), g, __fmul_rn(it.v[i], it.beta2));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), it.bc2_sqrt), it.eps);
    param = __fadd_rn(param, __fdiv_rn(__fmul_rn(it.neg_step, m), denom));
    it.m[i] = m;
    it.v[i] = v;
    it.p[i] = param;
    if (it.out_type == kBF16) static_cast<__nv_bfloat16*>(it.out)[i] = __float2bfloat16(param);
    else if (it.out_type == kF16) static_cast<__half*>(it.out)[i] = __float2half(param);
  }
}

}  // namespace

void adamw_update_multi_cuda(const std::vector<AdamWWork>& work) {
  if (work.empty()) return;
  const Device device = work.front().master->device();
  cudaStream_t stream = cuda::device_stream(*work.front().master);
  MultiTensorBatcher<Item, kItemsPerLaunch, std::function<void(const AdamWLaunch&, int32_t)>> batcher(
      [stream](const AdamWLaunch& launch, int32_t blocks) {
        MLR_LAUNCH((static_cast<unsigned int>(blocks), kThreads, 0, stream), adamw_multi_kernel)(launch);
        MLR_CUDA_CHECK_LAUNCH();
      });
  for (const AdamWWork& w : work) {
    const Tensor& master = *w.master;
    MLR_CHECK(master.device() == device && w.grad->device() == device && w.exp_avg->device() == device &&
                  w.exp_avg_sq->device() == device,
              "adamw (cuda): the tensors of one step must be on one device ({})", device.str());
    MLR_CHECK(master.dtype() == DType::f32 && w.exp_avg->dtype() == DType::f32 && w.exp_avg_sq->dtype() == DType::f32,
              "adamw (cuda): master weights and moments must be f32");
    MLR_CHECK(master.is_contiguous() && w.grad->is_contiguous() && w.exp_avg->is_contiguous() &&
                  w.exp_avg_sq->is_contiguous() && (!w.param_out || w.param_out->is_contiguous()),
              "adamw (cuda): tensors must be contiguous");
    const int64_t n = master.numel();
    MLR_CHECK(w.grad->numel() == n && w.exp_avg->numel() == n && w.exp_avg_sq->numel() == n,
              "adamw (cuda): sizes differ (master {}, grad {})", n, w.grad->numel());
    if (n == 0) continue;
    const AdamWScalars& s = w.scalars;
    Item it{};
    it.p = static_cast<float*>(master.data_ptr());
    it.m = static_cast<float*>(w.exp_avg->data_ptr());
    it.v = static_cast<float*>(w.exp_avg_sq->data_ptr());
    it.g = w.grad->data_ptr();
    it.g_type = stored_type(w.grad->dtype(), "the gradient");
    it.out = w.param_out ? w.param_out->data_ptr() : nullptr;
    it.out_type = w.param_out ? stored_type(w.param_out->dtype(), "the parameter") : kNone;
    MLR_CHECK(it.out_type != kF32, "adamw (cuda): an f32 parameter is its own master copy");
    it.n = n;
    // Scalars as the CPU reference forms them (Python doubles rounded to f32).
    const double w1 = 1.0 - s.beta1;
    const double bc1 = 1.0 - std::pow(s.beta1, static_cast<double>(s.step));
    const double bc2 = 1.0 - std::pow(s.beta2, static_cast<double>(s.step));
    it.decay = static_cast<float>(1.0 - s.lr * s.weight_decay);
    it.m_weight = static_cast<float>(w1);
    it.lerp_small = std::abs(w1) < 0.5;
    it.beta2 = static_cast<float>(s.beta2);
    it.v_weight = static_cast<float>(1.0 - s.beta2);
    it.neg_step = static_cast<float>(-(s.lr / bc1));
    it.bc2_sqrt = static_cast<float>(std::pow(bc2, 0.5));
    it.eps = static_cast<float>(s.eps);
    it.apply_decay = s.weight_decay != 0.0;
    batcher.add(it, (n + kChunk - 1) / kChunk);
  }
  batcher.finish();
}

}  // namespace mlr::optim_kernels

// CUDA kernels (tensor/kernels/cuda/*.cu): the kernels of tensor/kernels/kernel_list.h, with the
// same signatures and contracts as the CPU kernels they are tested against, plus the CUDA-only
// entry points below.
#pragma once

#include <optional>
#include <string>

#include "tensor/kernels/kernel_list.h"

namespace mlr::cuda {

MLR_DECLARE_DEVICE_KERNELS()

// Tensor-core flash attention (attention_flash.cu): bf16/f16, head dim 64 or 128, 16-byte aligned
// tensors, sm_80 or newer with a tile configuration that fits the device's shared memory per
// block; same arguments and results as attention_forward/backward.
bool flash_attention_supports(const Tensor& q, const Tensor& k, const Tensor& v);
// Why the flash kernel cannot take these tensors ("head dim 96 (it takes 64 or 128)"), or "" when it can.
std::string flash_attention_unsupported_reason(const Tensor& q, const Tensor& k, const Tensor& v);
void flash_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                             const Tensor& cu_seqlens, const Tensor& out, const Tensor& lse);
void flash_attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& out, const Tensor& lse, double scale, const Tensor& cu_seqlens,
                              const Tensor& dq, const Tensor& dk, const Tensor& dv);
// Which kernel attention_forward/backward use: automatic (flash where flash_attention_supports, the
// warp-per-row reference otherwise), or one forced, for tests and benchmarks that compare the two
// (forcing flash where it is unsupported is an error). MLR_ATTENTION=flash|reference sets the
// starting value.
enum class AttentionKernel { automatic, reference, flash };
void set_attention_kernel(AttentionKernel kernel);
AttentionKernel attention_kernel();

}  // namespace mlr::cuda

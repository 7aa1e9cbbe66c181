// CPU kernels (tensor/kernels/cpu/*.cpp), OpenMP-parallel; the LLaMA hot path (attention, RMSNorm,
// RoPE, SwiGLU, cross-entropy, bf16 matmul) in vector loops at the CPU's widest instruction set
// (simd.h), the rest plain loops. The list, with each kernel's contract, is
// tensor/kernels/kernel_list.h (the CUDA kernels have the same one).
#pragma once

#include <optional>

#include "tensor/kernels/kernel_list.h"

namespace mlr::cpu {

MLR_DECLARE_DEVICE_KERNELS()

}  // namespace mlr::cpu

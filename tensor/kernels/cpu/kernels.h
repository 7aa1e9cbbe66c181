// CPU kernels (tensor/kernels/cpu/*.cpp), OpenMP-parallel; the LLaMA hot path (attention, RMSNorm,
// RoPE, SwiGLU, cross-entropy, bf16 matmul) in vector loops at the CPU's widest instruction set
// (simd.h), the rest plain loops. The list, with each kernel's contract, is
// tensor/kernels/kernel_list.h (the CUDA kernels have the same one).
#pragma once

#include <optional>

#include "tensor/kernels/kernel_list.h"

namespace mlr::cpu {

MLR_DECLARE_DEVICE_KERNELS()

// CPU only (gated_lowrank.cpp): SMoRA's routed low-rank update, computed sparsely over the selected
// ranks; other devices compose it from dense products (tensor/nn_ops.cpp). Contiguous tensors of
// one floating dtype (the mask bool); h, g, ds are [T, r], zero outside the selection.
void gated_lowrank_forward(const Tensor& y, const Tensor& h, const Tensor& g, const Tensor& x, const Tensor& a,
                           const Tensor& b, const Tensor& s, const Tensor& mask, double scale);
void gated_lowrank_backward(const Tensor& dx, const Tensor& da, const Tensor& db, const Tensor& ds, const Tensor& dy,
                            const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s, const Tensor& mask,
                            const Tensor& h, const Tensor& g, double scale);
// The sigmoid router's backward over the selected entries (dx += when accumulate).
void sigmoid_router_backward(const Tensor& dx, const Tensor& dw, const Tensor& ds, const Tensor& x, const Tensor& w,
                             const Tensor& s, const Tensor& mask, bool accumulate);

}  // namespace mlr::cpu

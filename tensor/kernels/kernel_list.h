// The kernels every device implements, listed once: tensor/kernels/cpu/kernels.h declares them in
// mlr::cpu and tensor/kernels/cuda/kernels.h in mlr::cuda from this list, and MLR_DISPATCH
// (tensor/dispatch.h) calls the one of the tensor's device. A kernel missing on a device is an
// undefined symbol: the build that links it fails.
//
// Conventions: outputs are allocated by the caller (same device); a kernel writes every element
// of its output; inputs may be strided views unless a kernel says "contiguous".
// Kept C++17 (the .cu files include it).
#pragma once

#include <cstdint>
#include <vector>

#include "tensor/nn_ops.h"
#include "tensor/op_table.h"
#include "tensor/tensor.h"

// X(name, (parameters))
#define MLR_DEVICE_KERNELS(X)                                                                                     \
  /* ---- copies and fills (copy.*): dst and src have the same shape (src may be an expanded view); */           \
  /* any dtypes: converts */                                                                                      \
  X(copy, (const Tensor& dst, const Tensor& src))                                                                 \
  X(fill, (const Tensor& dst, double value))                                                                      \
  /* ---- random (random.*): element i of dst (row-major) from philox (seed, offset, i) */                        \
  X(random_uniform, (const Tensor& dst, uint64_t seed, uint64_t offset, double low, double high))                 \
  X(random_normal, (const Tensor& dst, uint64_t seed, uint64_t offset, double mean, double std))                  \
  /* ---- elementwise (elementwise.*), one op of tensor/op_table.h each: a and b have out's shape */              \
  /* (expanded views) and the same dtype; out has that dtype, or bool for predicates */                           \
  X(binary, (BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b))                                   \
  X(binary_scalar, (BinaryOp op, const Tensor& out, const Tensor& a, double b))                                   \
  X(unary, (UnaryOp op, const Tensor& out, const Tensor& a))                                                      \
  X(unary_backward, (UnaryBackwardOp op, const Tensor& out, const Tensor& g, const Tensor& saved))                \
  /* +-inf for "no bound" */                                                                                      \
  X(clamp, (const Tensor& out, const Tensor& a, double min, double max))                                          \
  /* cond (bool), a, b have out's shape (expanded views); a, b have out's dtype */                                \
  X(where, (const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b))                             \
  /* ---- reductions (reduce.*): out has a's shape with the reduced dims kept as size 1 (keepdim */               \
  /* layout, contiguous); reduce_mask[d] says whether dim d is reduced. Accumulates in f32 (f64 */                \
  /* for f64, i64 for ints) */                                                                                    \
  X(reduce, (ReduceOp op, const Tensor& out, const Tensor& a, const std::vector<bool>& reduce_mask))              \
  /* out i64, keepdim layout */                                                                                   \
  X(argmax, (const Tensor& out, const Tensor& a, int64_t dim))                                                    \
  /* keepdim layout */                                                                                            \
  X(logsumexp, (const Tensor& out, const Tensor& a, int64_t dim))                                                 \
  /* out bool [rows, n], scores [rows, n] contiguous, bias f64 [n] contiguous or undefined (topk.*) */            \
  X(topk_mask, (const Tensor& out, const Tensor& scores, int64_t k, const Tensor& bias))                          \
  /* ---- softmax (softmax.*) along dim */                                                                        \
  X(softmax, (const Tensor& out, const Tensor& a, int64_t dim))                                                   \
  X(log_softmax, (const Tensor& out, const Tensor& a, int64_t dim))                                               \
  X(softmax_backward, (const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim))                          \
  X(log_softmax_backward, (const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim))                      \
  /* ---- matmul (matmul.*): out[b] = a[b] @ b[b] for 3-D a [B, m, k], b [B, k, n], out [B, m, n] */              \
  /* (contiguous); a and b may be any strided views whose last two dims are row- or column-major */               \
  /* (transposes without copies); batch stride 0 allowed (broadcast). Accumulates in f32 (f64 for f64) */         \
  X(matmul, (const Tensor& out, const Tensor& a, const Tensor& b))                                                \
  /* ---- gather / scatter (index.*) */                                                                           \
  /* ids validated by the caller */                                                                               \
  X(embedding, (const Tensor& out, const Tensor& weight, const Tensor& ids))                                      \
  /* dweight zeroed by the caller */                                                                              \
  X(embedding_backward, (const Tensor& dweight, const Tensor& g, const Tensor& ids))                              \
  X(index_select, (const Tensor& out, const Tensor& a, int64_t dim, const Tensor& index))                         \
  /* out += ... */                                                                                                \
  X(index_add, (const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source))                       \
  /* ---- LLaMA hot path (rmsnorm.*, rope.*, swiglu.*, attention.*, cross_entropy.*): math in */                  \
  /* nn_ops.h. These take contiguous tensors (the front-end in tensor/nn_ops.cpp makes them so) */                \
  X(rmsnorm_forward, (const Tensor& x, const Tensor& weight, double eps, const Tensor& y, const Tensor& rstd))     \
  X(rmsnorm_backward, (const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,               \
                       const Tensor& dx, const Tensor* dweight))                                                  \
  X(rope_forward, (const Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout))     \
  X(rope_backward, (const Tensor& dx, const Tensor& dy, const Tensor& cos, const Tensor& sin, RopeLayout layout))  \
  X(rope_tables, (const Tensor& positions, const Tensor& inv_freq, const Tensor& cos, const Tensor& sin))         \
  X(swiglu_forward, (const Tensor& h, const Tensor& gate, const Tensor& up))                                      \
  X(swiglu_backward, (const Tensor& dh, const Tensor& gate, const Tensor& up, const Tensor& dgate,                \
                      const Tensor& dup))                                                                         \
  X(attention_forward, (const Tensor& q, const Tensor& k, const Tensor& v, double scale,                          \
                        const Tensor& cu_seqlens, const Tensor& out, const Tensor& lse))                          \
  X(attention_backward, (const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,                   \
                         const Tensor& out, const Tensor& lse, double scale, const Tensor& cu_seqlens,            \
                         const Tensor& dq, const Tensor& dk, const Tensor& dv))                                   \
  X(cross_entropy_forward, (const Tensor& logits, const Tensor& targets, int64_t ignore_index,                    \
                            const Tensor& losses, const Tensor& lse))                                             \
  X(cross_entropy_backward, (const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,                  \
                             const Tensor& targets, const Tensor& lse, int64_t ignore_index))

// Declares every kernel of the list in the current namespace.
#define MLR_DECLARE_DEVICE_KERNEL(name, parameters) void name parameters;
#define MLR_DECLARE_DEVICE_KERNELS() MLR_DEVICE_KERNELS(MLR_DECLARE_DEVICE_KERNEL)

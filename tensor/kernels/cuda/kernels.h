// CUDA kernels (tensor/kernels/cuda/*.cu), same signatures as the CPU kernels they are tested against.
// Conventions: outputs are allocated by the caller (same device); a kernel writes every element
// of its output; inputs may be strided views unless a kernel says "contiguous".
#pragma once

#include <optional>

#include "tensor/kernels/kernel_ops.h"
#include "tensor/nn_ops.h"
#include "tensor/tensor.h"

namespace mlr::cuda {

// ---- copies and fills (copy.*) ----
// dst and src have the same shape (src may be an expanded view); any dtypes: converts.
void copy(const Tensor& dst, const Tensor& src);
void fill(const Tensor& dst, double value);

// ---- random (random.*): element i of dst (row-major) from philox (seed, offset, i) ----
void random_uniform(const Tensor& dst, uint64_t seed, uint64_t offset, double low, double high);
void random_normal(const Tensor& dst, uint64_t seed, uint64_t offset, double mean, double std);

// ---- elementwise (elementwise.*) ----
// a and b have out's shape (expanded views) and the same dtype; out has that dtype, or bool for
// predicates.
void binary(BinaryOp op, const Tensor& out, const Tensor& a, const Tensor& b);
void binary_scalar(BinaryOp op, const Tensor& out, const Tensor& a, double b);
void unary(UnaryOp op, const Tensor& out, const Tensor& a);
void unary_backward(UnaryBackwardOp op, const Tensor& out, const Tensor& g, const Tensor& saved);
void clamp(const Tensor& out, const Tensor& a, double min, double max);  // +-inf for "no bound"
// cond (bool), a, b have out's shape (expanded views); a, b have out's dtype
void where(const Tensor& out, const Tensor& cond, const Tensor& a, const Tensor& b);

// ---- reductions (reduce.*) ----
// out has a's shape with the reduced dims kept as size 1 (keepdim layout, contiguous);
// reduce_mask[d] says whether dim d is reduced. Accumulates in f32 (f64 for f64, i64 for ints).
void reduce(ReduceOp op, const Tensor& out, const Tensor& a, const std::vector<bool>& reduce_mask);
void argmax(const Tensor& out, const Tensor& a, int64_t dim);     // out i64, keepdim layout
void logsumexp(const Tensor& out, const Tensor& a, int64_t dim);  // keepdim layout
// out bool [rows, n], scores [rows, n] contiguous, bias f64 [n] contiguous or undefined (topk.*)
void topk_mask(const Tensor& out, const Tensor& scores, int64_t k, const Tensor& bias);

// ---- softmax (softmax.*) along dim ----
void softmax(const Tensor& out, const Tensor& a, int64_t dim);
void log_softmax(const Tensor& out, const Tensor& a, int64_t dim);
void softmax_backward(const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim);
void log_softmax_backward(const Tensor& dx, const Tensor& g, const Tensor& y, int64_t dim);

// ---- matmul (matmul.*) ----
// out[b] = a[b] @ b[b] for 3-D a [B, m, k], b [B, k, n], out [B, m, n] (contiguous); a and b may
// be any strided views whose last two dims are row- or column-major (transposes without copies);
// batch stride 0 allowed (broadcast). Accumulates in f32 (f64 for f64).
void matmul(const Tensor& out, const Tensor& a, const Tensor& b);

// ---- gather / scatter (index.*) ----
void embedding(const Tensor& out, const Tensor& weight, const Tensor& ids);  // ids validated by caller
void embedding_backward(const Tensor& dweight, const Tensor& g, const Tensor& ids);  // dweight zeroed by caller
void index_select(const Tensor& out, const Tensor& a, int64_t dim, const Tensor& index);
void index_add(const Tensor& out, int64_t dim, const Tensor& index, const Tensor& source);  // out += ...

// ---- LLaMA hot path (rmsnorm.*, rope.*, swiglu.*, attention.*, cross_entropy.*): math in nn_ops.h ----
void rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps, const Tensor& y, const Tensor& rstd);
void rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                      const Tensor& dx, const Tensor* dweight);
void rope_forward(const Tensor& y, const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout);
void rope_backward(const Tensor& dx, const Tensor& dy, const Tensor& cos, const Tensor& sin, RopeLayout layout);
void rope_tables(const Tensor& positions, const Tensor& inv_freq, const Tensor& cos, const Tensor& sin);
void swiglu_forward(const Tensor& h, const Tensor& gate, const Tensor& up);
void swiglu_backward(const Tensor& dh, const Tensor& gate, const Tensor& up, const Tensor& dgate, const Tensor& dup);
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale, const Tensor& cu_seqlens,
                       const Tensor& out, const Tensor& lse);
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& lse, double scale, const Tensor& cu_seqlens, const Tensor& dq,
                        const Tensor& dk, const Tensor& dv);
// Tensor-core flash attention (attention_flash.cu): bf16/f16, head dim 64 or 128, 16-byte aligned
// tensors, sm_80 or newer; same arguments and results as attention_forward/backward.
bool flash_attention_supports(const Tensor& q, const Tensor& k, const Tensor& v);
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
void cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index, const Tensor& losses,
                           const Tensor& lse);
void cross_entropy_backward(const Tensor& dlogits, const Tensor& dlosses, const Tensor& logits,
                            const Tensor& targets, const Tensor& lse, int64_t ignore_index);

}  // namespace mlr::cuda

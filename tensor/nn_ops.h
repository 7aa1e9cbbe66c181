// The LLaMA hot-path operations, forward and backward, as plain functions over tensors. The CPU
// versions (tensor/kernels/cpu/<op>.cpp) are the readable references; CUDA versions are fused
// kernels tested against them. autograd/derivatives.cpp wraps each pair in a differentiable
// Function, which nn/ and llama/ call.
// Saved statistics (rstd, lse) and per-row losses are f32 as stated below, except for f64 inputs,
// where they are f64 so the f64 reference path (finite-difference checks) keeps its precision.
//
// Values that index memory (cu_seqlens, cross-entropy targets, and the ids of tensor/ops.h's
// embedding and index ops) are checked by the front-ends for CPU tensors, where reading them is
// free. On a device, reading them means a copy to the host and a drained stream per op, so there
// they are checked once where a batch is built from host data (the trainer, LlamaForCausalLM) and
// trusted inside the ops, unless debug checks are on.
#pragma once

#include "tensor/tensor.h"

namespace mlr {

// Debug checks: the value checks above also for device tensors (each one a host round trip).
// Off unless the environment sets MLR_DEBUG_CHECKS to a value other than "0" or empty, or
// set_debug_checks(true) is called.
bool debug_checks();
void set_debug_checks(bool on);
// Whether an op should check the values of `t`: always on the CPU, with debug checks elsewhere.
inline bool check_values_of(const Tensor& t) { return t.device().is_cpu() || debug_checks(); }

// ---- RMSNorm over the last dimension ----
//   r = rsqrt(mean(x^2) + eps),  y = x * r * w
//   dx = r * (dy*w - x * r^2 * mean(dy*w*x)),  dw = sum over rows of dy * x * r
struct RmsNormOutput {
  Tensor y;
  Tensor rstd;  // f32 (f64 for f64 x), one per row: shape x.shape()[:-1]
};
RmsNormOutput rmsnorm_forward(const Tensor& x, const Tensor& weight, double eps);
// Returns dx; fills *dweight (f32 accumulation, weight's dtype) when dweight is not null.
Tensor rmsnorm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                        Tensor* dweight);

// ---- Rotary position embedding ----
// x: [batch, seq, heads, head_dim]; cos, sin: [seq, head_dim/2] (f32) or [batch, seq, head_dim/2]
// (per-token positions, e.g. packed sequences).
// Half layout (Hugging Face rotate_half): pairs (x[i], x[i + d/2]); interleaved: (x[2i], x[2i+1]).
//   y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin;   backward is the rotation by -theta.
enum class RopeLayout { half, interleaved };
Tensor rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout);
Tensor rope_backward(const Tensor& dy, const Tensor& cos, const Tensor& sin, RopeLayout layout);
// cos/sin tables [positions, head_dim/2] in f32 for inv_freq[i] = theta^(-2i/head_dim) (optionally
// already rescaled by the caller), angle = position * inv_freq[i].
void rope_tables(const Tensor& positions, const Tensor& inv_freq, Tensor& cos, Tensor& sin);

// ---- SwiGLU: h = silu(gate) * up ----
//   dgate = dh * up * s * (1 + gate (1 - s)),  dup = dh * silu(gate),   s = sigmoid(gate)
Tensor swiglu_forward(const Tensor& gate, const Tensor& up);
void swiglu_backward(const Tensor& dh, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup);

// ---- SMoRA's routed low-rank update (multilora/smora.h) ----
// x [T, in], A [r, in], B [out, r], router scores s [T, r], selected m (bool [T, r]), gate scale c:
//   Z = sum(s o m) per row,  g = c (s o m) / Z,  h = (x A^T) o m,  y = (g o h) B^T   [T, out]
// Backward, given dy:
//   u = dy B,  dx = (g o u) A,  dA = (g o u)^T x,  dB = dy^T (g o h),
//   ds = m o (c / Z) (u o h - rowsum(u o h o g) / c)
// On the CPU only the selected ranks are computed (k of r per token: tensor/kernels/cpu/
// gated_lowrank.cpp); elsewhere the dense products above, with the mask applied.
struct GatedLowrankOutput {
  Tensor y;
  Tensor h, g;  // [T, r], zero outside the selection: what backward needs
};
GatedLowrankOutput gated_lowrank_forward(const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s,
                                         const Tensor& selected, double scale);
struct GatedLowrankGrads {
  Tensor dx, da, db, ds;
};
GatedLowrankGrads gated_lowrank_backward(const Tensor& dy, const Tensor& x, const Tensor& a, const Tensor& b,
                                         const Tensor& s, const Tensor& selected, const Tensor& h, const Tensor& g,
                                         double scale);

// ---- The backward of SMoRA's router: scores s = score(x W^T) per row, x [T, in], W [r, in] ----
//   sigmoid: dlogits = ds o s o (1 - s);   softmax: dlogits = s o (ds - rowsum(ds o s))
//   dx = dlogits W,  dW = dlogits^T x
// With the sigmoid and ds zero outside the selection (gated_lowrank_backward's ds), dlogits is
// zero there too: the CPU computes only the selected entries. With dx_into defined, dx is added
// to it (and it is returned as dx).
enum class RouterScore { sigmoid, softmax };
struct RouterGrads {
  Tensor dx, dw;
};
RouterGrads router_backward(const Tensor& ds, const Tensor& x, const Tensor& w, const Tensor& s,
                            const Tensor& selected, RouterScore score, const Tensor& dx_into = Tensor());

// ---- Causal attention with grouped-query heads ----
// q: [batch, seq, heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim], heads % kv_heads == 0;
// query head h reads key/value head h / (heads / kv_heads).
//   S = q k^T * scale (causal mask: key j <= query i; with cu_seqlens, also same document)
//   P = softmax(S), O = P v, lse = logsumexp(S) per query row
//   dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = dS K * scale, dK = dS^T Q * scale
// cu_seqlens (i32 or i64, optional): cumulative document lengths of a packed row,
// [0, l1, l1+l2, ..., seq], for batch 1 packed input; attention never crosses a document boundary.
struct AttentionOutput {
  Tensor out;  // [batch, seq, heads, head_dim]
  Tensor lse;  // f32 [batch, heads, seq]
};
AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                  const Tensor& cu_seqlens = Tensor());
struct AttentionGrads {
  Tensor dq, dk, dv;
};
AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, double scale,
                                  const Tensor& cu_seqlens = Tensor());

// ---- Softmax cross-entropy over the last dimension with ignore_index ----
// logits [N, V], targets [N] (i64 or i32). loss_i = lse_i - logits[i, t_i] for t_i != ignore_index.
// Returns per-row losses (f32, 0 for ignored rows) and lse (f32); the mean over non-ignored rows
// is the caller's choice. Backward for per-row upstream gradients g_i:
//   dlogits[i, :] = g_i * (softmax(logits[i]) - onehot(t_i)), zero for ignored rows.
struct CrossEntropyOutput {
  Tensor losses;  // f32 [N]
  Tensor lse;     // f32 [N]
};
CrossEntropyOutput cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);
Tensor cross_entropy_backward(const Tensor& dlosses, const Tensor& logits, const Tensor& targets,
                              const Tensor& lse, int64_t ignore_index = -100);

}  // namespace mlr

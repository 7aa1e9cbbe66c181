// Tensor operations (no gradients; autograd/ differentiates them). Every op validates shapes,
// dtypes and devices and throws mlr::Error naming itself and the shapes at fault. Outputs are new
// contiguous tensors unless the name ends in '_' (in place).
//
// Binary elementwise ops broadcast numpy-style and promote dtypes as tensor/dtype.h states.
// Floating math (exp, log, ...) on integer or bool inputs computes in f32. bf16/f16 compute in f32.
#pragma once

#include <optional>
#include <vector>

#include "tensor/op_table.h"
#include "tensor/tensor.h"

namespace mlr {

// ---- elementwise (tensor/op_table.h lists them, with their result dtypes and derivatives) ----
// Binary ops broadcast; those marked `scalar` in the table also take a double as b. Comparisons and
// logical ops give bool tensors.
#define MLR_DECLARE_BINARY_scalar(name) \
  Tensor name(const Tensor& a, const Tensor& b); \
  Tensor name(const Tensor& a, double b);
#define MLR_DECLARE_BINARY_no_scalar(name) Tensor name(const Tensor& a, const Tensor& b);
#define MLR_DECLARE_BINARY(name, kind, scalar_form, ...) MLR_DECLARE_BINARY_##scalar_form(name)
MLR_BINARY_OPS(MLR_DECLARE_BINARY)
#undef MLR_DECLARE_BINARY
#undef MLR_DECLARE_BINARY_scalar
#undef MLR_DECLARE_BINARY_no_scalar

#define MLR_DECLARE_UNARY(name, ...) Tensor name(const Tensor& a);
MLR_UNARY_OPS(MLR_DECLARE_UNARY)
#undef MLR_DECLARE_UNARY

// Elementwise derivatives used by autograd: g times the derivative of the op, from the saved
// input x or output y (sigmoid_backward(g, y), tanh_backward(g, y), silu_backward(g, x), ...).
#define MLR_DECLARE_UNARY_BACKWARD(name, function, ...) Tensor function(const Tensor& g, const Tensor& saved);
MLR_UNARY_BACKWARD_OPS(MLR_DECLARE_UNARY_BACKWARD)
#undef MLR_DECLARE_UNARY_BACKWARD

Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max);

// The op of a table entry chosen at run time (the test harnesses iterate the table with these):
// apply(UnaryOp::exp, x) is exp(x). A tensor-scalar form exists for every binary op here.
Tensor apply(UnaryOp op, const Tensor& a);
Tensor apply(BinaryOp op, const Tensor& a, const Tensor& b);
Tensor apply(BinaryOp op, const Tensor& a, double b);
Tensor apply(UnaryBackwardOp op, const Tensor& g, const Tensor& saved);
Tensor apply(ReduceOp op, const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);

// a += b (b broadcast to a's shape, converted to a's dtype); the workhorse of gradient accumulation.
Tensor& add_(Tensor& a, const Tensor& b);
Tensor& mul_(Tensor& a, double b);

// ---- selection ----
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond is bool; broadcasting
Tensor where(const Tensor& cond, const Tensor& a, double b);
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);  // mask is bool, broadcast to a

// ---- dtype conversion (the result is a copy; to(dtype) returns the input when nothing changes) ----
Tensor cast(const Tensor& a, DType dtype);

// ---- reductions (dims may be negative; an empty dims list reduces every dimension) ----
#define MLR_DECLARE_REDUCE(name, ...) \
  Tensor name(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
MLR_REDUCE_OPS(MLR_DECLARE_REDUCE)  // sum, mean, amax, amin
#undef MLR_DECLARE_REDUCE
Tensor argmax(const Tensor& a, int64_t dim, bool keepdim = false);  // i64; first maximum wins
Tensor logsumexp(const Tensor& a, int64_t dim, bool keepdim = false);
// Bool tensor of scores' shape, true at the k largest entries of scores + bias along the last
// dimension (bias: 1-D of that size, optional). Keys are compared in f64; ties go to the lower
// index; a NaN key ranks below every number. On the scores' device (no host round trip).
Tensor topk_mask(const Tensor& scores, int64_t k, const Tensor& bias = Tensor());
// Sums `a` down to `shape` (the inverse of broadcasting a tensor of `shape` to a.shape()).
Tensor sum_to(const Tensor& a, const Shape& shape);

// ---- softmax ----
Tensor softmax(const Tensor& a, int64_t dim);
Tensor log_softmax(const Tensor& a, int64_t dim);
// dx = y * (g - sum(g * y, dim))
Tensor softmax_backward(const Tensor& g, const Tensor& y, int64_t dim);
// dx = g - exp(y) * sum(g, dim),  y = log_softmax(x)
Tensor log_softmax_backward(const Tensor& g, const Tensor& y, int64_t dim);

// ---- matrix products (BLAS on the CPU; bf16/f16 through an f32 path) ----
// matmul: a [..., m, k] @ b [..., k, n] -> [..., m, n]; batch dimensions broadcast; 1-D operands
// are promoted as in numpy (and the added dimension removed).
Tensor matmul(const Tensor& a, const Tensor& b);
// linear: x [..., in] @ w[out, in]^T (+ bias[out]) -> [..., out]
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());

// ---- gather / scatter / shape assembly ----
// embedding: weight [V, D], ids (i32/i64, any shape) -> [ids..., D]. Ids out of range are an error.
Tensor embedding(const Tensor& weight, const Tensor& ids);
// The scatter-add backward: dweight[ids[i]] += g[i]  -> [num_embeddings, D]
Tensor embedding_backward(const Tensor& g, const Tensor& ids, int64_t num_embeddings);
Tensor index_select(const Tensor& a, int64_t dim, const Tensor& index);
// out = zeros(shape); out.index_select(dim, index) += g   (the backward of index_select)
Tensor index_add(const Tensor& base, int64_t dim, const Tensor& index, const Tensor& source);
Tensor cat(const std::vector<Tensor>& tensors, int64_t dim);
Tensor stack(const std::vector<Tensor>& tensors, int64_t dim);
std::vector<Tensor> split(const Tensor& a, int64_t split_size, int64_t dim);          // views
std::vector<Tensor> split(const Tensor& a, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Tensor> chunk(const Tensor& a, int64_t chunks, int64_t dim);

// ---- comparison helpers for tests ----
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
double max_abs_diff(const Tensor& a, const Tensor& b);

// ---- operators ----
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, double b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, double b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, double b) { return div(a, b); }
inline Tensor operator*(double a, const Tensor& b) { return mul(b, a); }
inline Tensor operator-(const Tensor& a) { return neg(a); }

}  // namespace mlr

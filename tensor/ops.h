// Tensor operations (no gradients; autograd/ differentiates them). Every op validates shapes,
// dtypes and devices and throws mlr::Error naming itself and the shapes at fault. Outputs are new
// contiguous tensors unless the name ends in '_' (in place).
//
// Binary elementwise ops broadcast numpy-style and promote dtypes as tensor/dtype.h states.
// Floating math (exp, log, ...) on integer or bool inputs computes in f32. bf16/f16 compute in f32.
#pragma once

#include <optional>
#include <vector>

#include "tensor/tensor.h"

namespace mlr {

// ---- elementwise binary (broadcasting) ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor pow(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);
Tensor minimum(const Tensor& a, const Tensor& b);
Tensor add(const Tensor& a, double b);
Tensor sub(const Tensor& a, double b);
Tensor mul(const Tensor& a, double b);
Tensor div(const Tensor& a, double b);
Tensor pow(const Tensor& a, double exponent);
// comparisons give bool tensors
Tensor eq(const Tensor& a, const Tensor& b);
Tensor ne(const Tensor& a, const Tensor& b);
Tensor lt(const Tensor& a, const Tensor& b);
Tensor le(const Tensor& a, const Tensor& b);
Tensor gt(const Tensor& a, const Tensor& b);
Tensor ge(const Tensor& a, const Tensor& b);
Tensor eq(const Tensor& a, double b);
Tensor ne(const Tensor& a, double b);
Tensor lt(const Tensor& a, double b);
Tensor le(const Tensor& a, double b);
Tensor gt(const Tensor& a, double b);
Tensor ge(const Tensor& a, double b);
Tensor logical_and(const Tensor& a, const Tensor& b);
Tensor logical_or(const Tensor& a, const Tensor& b);
Tensor logical_not(const Tensor& a);

// a += b (b broadcast to a's shape, converted to a's dtype); the workhorse of gradient accumulation.
Tensor& add_(Tensor& a, const Tensor& b);
Tensor& mul_(Tensor& a, double b);

// ---- elementwise unary ----
Tensor neg(const Tensor& a);
Tensor abs(const Tensor& a);
Tensor sign(const Tensor& a);
Tensor exp(const Tensor& a);
Tensor log(const Tensor& a);
Tensor sqrt(const Tensor& a);
Tensor rsqrt(const Tensor& a);
Tensor square(const Tensor& a);
Tensor reciprocal(const Tensor& a);
Tensor sin(const Tensor& a);
Tensor cos(const Tensor& a);
Tensor tanh(const Tensor& a);
Tensor sigmoid(const Tensor& a);
Tensor relu(const Tensor& a);
Tensor silu(const Tensor& a);
Tensor gelu(const Tensor& a);       // exact: x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
Tensor gelu_tanh(const Tensor& a);  // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max);
Tensor isnan(const Tensor& a);      // bool
Tensor isfinite(const Tensor& a);   // bool
// Elementwise derivatives used by autograd (g times the derivative of the op at x).
Tensor sigmoid_backward(const Tensor& g, const Tensor& y);  // g * y * (1 - y), y = sigmoid(x)
Tensor tanh_backward(const Tensor& g, const Tensor& y);     // g * (1 - y^2),  y = tanh(x)
Tensor silu_backward(const Tensor& g, const Tensor& x);     // g * s * (1 + x (1 - s)), s = sigmoid(x)
Tensor gelu_backward(const Tensor& g, const Tensor& x);
Tensor gelu_tanh_backward(const Tensor& g, const Tensor& x);

// ---- selection ----
Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b);  // cond is bool; broadcasting
Tensor where(const Tensor& cond, const Tensor& a, double b);
Tensor masked_fill(const Tensor& a, const Tensor& mask, double value);  // mask is bool, broadcast to a

// ---- dtype conversion (the result is a copy; to(dtype) returns the input when nothing changes) ----
Tensor cast(const Tensor& a, DType dtype);

// ---- reductions (dims may be negative; an empty dims list reduces every dimension) ----
Tensor sum(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor amax(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor amin(const Tensor& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
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

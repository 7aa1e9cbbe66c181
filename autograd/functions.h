// Differentiable operations on Variables: the autograd counterparts of tensor/ops.h and
// tensor/nn_ops.h. Each records a node (when grad mode is on and some input requires grad) whose
// rule is in autograd/derivatives.cpp. A Tensor argument converts to a constant Variable.
//
// Caveat: where both headers are visible, a braced list of Tensors ({a, b}) for cat/stack is
// ambiguous; spell the vector type (std::vector<Tensor>{a, b} or std::vector<Variable>{a, b}).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "autograd/variable.h"
#include "tensor/nn_ops.h"
#include "tensor/op_table.h"

namespace mlr {

// ---- elementwise ops of tensor/op_table.h with a derivative rule (its derivative columns) ----
// Binary ones broadcast; gradients are summed back to each input's shape. pow(a, b) needs a > 0
// where b needs a gradient. abs and relu have gradient 0 at 0.
#define MLR_DECLARE_VARIABLE_BINARY_rule(name) Variable name(const Variable& a, const Variable& b);
#define MLR_DECLARE_VARIABLE_BINARY_nograd(name)
#define MLR_DECLARE_VARIABLE_BINARY(name, kind, scalar_form, grad, ...) MLR_DECLARE_VARIABLE_BINARY_##grad(name)
MLR_BINARY_OPS(MLR_DECLARE_VARIABLE_BINARY)
#undef MLR_DECLARE_VARIABLE_BINARY
#undef MLR_DECLARE_VARIABLE_BINARY_rule
#undef MLR_DECLARE_VARIABLE_BINARY_nograd

#define MLR_DECLARE_VARIABLE_UNARY_none(name) Variable name(const Variable& a);
#define MLR_DECLARE_VARIABLE_UNARY_input(name) Variable name(const Variable& a);
#define MLR_DECLARE_VARIABLE_UNARY_output(name) Variable name(const Variable& a);
#define MLR_DECLARE_VARIABLE_UNARY_nograd(name)
#define MLR_DECLARE_VARIABLE_UNARY(name, kind, saves, ...) MLR_DECLARE_VARIABLE_UNARY_##saves(name)
MLR_UNARY_OPS(MLR_DECLARE_VARIABLE_UNARY)
#undef MLR_DECLARE_VARIABLE_UNARY
#undef MLR_DECLARE_VARIABLE_UNARY_none
#undef MLR_DECLARE_VARIABLE_UNARY_input
#undef MLR_DECLARE_VARIABLE_UNARY_output
#undef MLR_DECLARE_VARIABLE_UNARY_nograd

// ---- with a scalar ----
Variable add(const Variable& a, double b);
Variable sub(const Variable& a, double b);
Variable sub(double a, const Variable& b);  // a - b
Variable mul(const Variable& a, double b);
Variable div(const Variable& a, double b);
Variable div(double a, const Variable& b);  // a / b
Variable pow(const Variable& a, double exponent);
// Gradient passes where min <= a <= max (both bounds inclusive, as in PyTorch).
Variable clamp(const Variable& a, std::optional<double> min, std::optional<double> max);

// ---- selection ----
Variable where(const Tensor& cond, const Variable& a, const Variable& b);  // cond bool, broadcasting
Variable masked_fill(const Variable& a, const Tensor& mask, double value);  // mask bool, broadcast to a

// ---- reductions (empty dims: all dimensions) ----
Variable sum(const Variable& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Variable mean(const Variable& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Gradient goes to the positions of the maximum, split evenly between ties.
Variable amax(const Variable& a, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Variable logsumexp(const Variable& a, int64_t dim, bool keepdim = false);
Variable softmax(const Variable& a, int64_t dim);
Variable log_softmax(const Variable& a, int64_t dim);

// ---- matrix products ----
Variable matmul(const Variable& a, const Variable& b);
// x [..., in] @ w[out, in]^T (+ bias[out]); a frozen w keeps no copy of x.
Variable linear(const Variable& x, const Variable& w, const Variable& bias = Variable());

// ---- views and shape ops (outputs share storage with the input where the tensor op does) ----
Variable reshape(const Variable& a, Shape shape);
Variable view(const Variable& a, Shape shape);
Variable flatten(const Variable& a, int64_t start_dim = 0, int64_t end_dim = -1);
Variable permute(const Variable& a, const std::vector<int64_t>& order);
Variable transpose(const Variable& a, int64_t dim0, int64_t dim1);
Variable narrow(const Variable& a, int64_t dim, int64_t start, int64_t length);
Variable slice(const Variable& a, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Variable select(const Variable& a, int64_t dim, int64_t index);
Variable expand(const Variable& a, Shape shape);
Variable squeeze(const Variable& a, int64_t dim);
Variable unsqueeze(const Variable& a, int64_t dim);
Variable contiguous(const Variable& a);
// To another dtype; the gradient is cast back. Casting to an integer dtype is not differentiable.
Variable cast(const Variable& a, DType dtype);

// ---- assembly and gathers ----
Variable cat(const std::vector<Variable>& inputs, int64_t dim);
Variable stack(const std::vector<Variable>& inputs, int64_t dim);
std::vector<Variable> split(const Variable& a, int64_t split_size, int64_t dim);
std::vector<Variable> split(const Variable& a, const std::vector<int64_t>& sizes, int64_t dim);
std::vector<Variable> chunk(const Variable& a, int64_t chunks, int64_t dim);
Variable index_select(const Variable& a, int64_t dim, const Tensor& index);
Variable embedding(const Variable& weight, const Tensor& ids);  // weight [V, D], ids any shape

// ---- LLaMA ops (tensor/nn_ops.h kernels, wrapped as custom Functions) ----
Variable rmsnorm(const Variable& x, const Variable& weight, double eps);
Variable rope(const Variable& x, const Tensor& cos, const Tensor& sin, RopeLayout layout = RopeLayout::half);
Variable swiglu(const Variable& gate, const Variable& up);  // silu(gate) * up
// SMoRA's routed low-rank update (tensor/nn_ops.h): x [T, in], A [r, in], B [out, r], scores [T, r],
// selected bool [T, r]: y = (g o (x A^T)) B^T with g = scale (s o m) / rowsum(s o m); sparse on the CPU.
Variable gated_lowrank(const Variable& x, const Variable& a, const Variable& b, const Variable& scores,
                       const Tensor& selected, double scale);
// The same with the router inside: scores = score(x_router router^T) computed by the caller (who
// needed them to select), and gradients to x_router and router through them (sparse on the CPU
// for the sigmoid). x_router may be x itself.
Variable routed_lowrank(const Variable& x, const Variable& x_router, const Variable& a, const Variable& b,
                        const Variable& router, const Tensor& scores, const Tensor& selected, double scale,
                        RouterScore score);
// Causal grouped-query attention; q [B, S, H, D], k and v [B, S, Hkv, D].
Variable attention(const Variable& q, const Variable& k, const Variable& v, double scale,
                   const Tensor& cu_seqlens = Tensor());
enum class Reduction { mean, sum, none };
// logits [N, V], targets [N]. mean: over the rows whose target is not ignore_index (0 when every
// row is ignored, rather than NaN); sum: over all rows; none: per-row losses [N] (0 where ignored).
Variable cross_entropy(const Variable& logits, const Tensor& targets, int64_t ignore_index = -100,
                       Reduction reduction = Reduction::mean);

// The names of the differentiable ops above, as their derivative rules are named in
// autograd/derivatives.cpp (the tests require a gradcheck case for each).
const std::vector<std::string>& differentiable_ops();

// ---- operators ----
inline Variable operator+(const Variable& a, const Variable& b) { return add(a, b); }
inline Variable operator-(const Variable& a, const Variable& b) { return sub(a, b); }
inline Variable operator*(const Variable& a, const Variable& b) { return mul(a, b); }
inline Variable operator/(const Variable& a, const Variable& b) { return div(a, b); }
inline Variable operator+(const Variable& a, double b) { return add(a, b); }
inline Variable operator-(const Variable& a, double b) { return sub(a, b); }
inline Variable operator*(const Variable& a, double b) { return mul(a, b); }
inline Variable operator/(const Variable& a, double b) { return div(a, b); }
inline Variable operator+(double a, const Variable& b) { return add(b, a); }
inline Variable operator-(double a, const Variable& b) { return sub(a, b); }
inline Variable operator*(double a, const Variable& b) { return mul(b, a); }
inline Variable operator/(double a, const Variable& b) { return div(a, b); }
inline Variable operator-(const Variable& a) { return neg(a); }

}  // namespace mlr

// The op table: every elementwise and reduction op, declared once. What is derived from it:
//   - the op enums (UnaryOp, BinaryOp, UnaryBackwardOp, ReduceOp), their names and traits (below);
//   - the public tensor functions (tensor/ops.h declares and tensor/ops_*.cpp defines them);
//   - the kernels' per-op dispatch on both devices: tensor/kernels/cpu/elementwise.cpp and
//     tensor/kernels/cuda/elementwise.cu (and reduce.*) switch over every entry of a list, calling
//     the device's math for that op (a template specialised once per op). An op without math on a
//     device instantiates an undefined template: the build fails, on that device;
//   - the derivative rules of the unary and binary ops (autograd/derivatives.cpp expands the
//     derivative columns; tensor/ never does: for tensor/ they are text);
//   - the test registries: the CUDA-vs-CPU harness (tests/tensor/ops_cuda_test.cpp) runs every entry
//     in f32, bf16 and f16 on inputs drawn from the entry's domain, at its tolerance; the float64
//     finite-difference gradcheck (tests/autograd/gradcheck_test.cpp) runs every differentiable one.
// tensor/README.md says how to add an op. The kernels every device implements are listed once in
// tensor/kernels/kernel_list.h.
//
// Kept C++17 (the .cu files include it and nvcc compiles them as C++17).
#pragma once

#include <cstddef>
#include <cstdint>

namespace mlr {

// ---------------------------------------------------------------- columns
//
// kind      what the result dtype is and which input dtypes the kernel math sees:
//             same       the input's dtype; the math runs on integers and bool too (in i64)
//             floating   the input's dtype if floating, else f32: the math only sees f32/f64
//             predicate  bool; the math runs on every dtype
// inputs    the domain the tests draw an operand from:
//             normal     any real value (the harness draws U(-2, 2), gradcheck N(0, 1))
//             positive   in [0.5, 2]
//             nonzero    |x| in [0.2, 1.5] with a random sign (away from zero and from the kinks at 0)
//             specials   as normal, plus NaN, +-inf, +-0 (ops whose point is those values)
// tol       tolerance of the CUDA result against the CPU one, per dtype (OpTolerance below)
// saves     (unary) what the derivative reads: none, input (as `a`), output (as `out`), or nograd
//           for an op with no derivative (its derivative column is then "-")
// derivative (unary) the gradient of the input as an expression of the tensors g (the gradient of
//           the output), a and out; the rule saves only what `saves` names
// da, db    (binary) the gradients of the two inputs, expressions of g, a, b and out; da_saves and
//           db_saves say which of kSaveA, kSaveB, kSaveOut each reads, so that a tensor is kept
//           only when an input whose gradient reads it needs a gradient. grad: rule, or nograd.
// scalar    (binary) whether a tensor-scalar form op(Tensor, double) exists: scalar or no_scalar

// ---------------------------------------------------------------- unary ops
//  X(name,        kind,      saves,  derivative,                         inputs,   tol)
#define MLR_UNARY_OPS(X)                                                                             \
  X(neg,           same,      none,   neg(g),                             normal,   exact)           \
  X(abs,           same,      input,  g * sign(a),                        nonzero,  exact)           \
  X(sign,          same,      nograd, -,                                  specials, exact)           \
  X(exp,           floating,  output, g * out,                            normal,   rounding)        \
  X(log,           floating,  input,  g / a,                              positive, rounding)        \
  X(sqrt,          floating,  output, g / (out * 2.0),                    positive, rounding)        \
  X(rsqrt,         floating,  output, g * out * square(out) * -0.5,       positive, rounding)        \
  X(square,        same,      input,  g * a * 2.0,                        normal,   rounding)        \
  X(reciprocal,    floating,  output, neg(g * square(out)),               nonzero,  rounding)        \
  X(sin,           floating,  input,  g * cos(a),                         normal,   rounding)        \
  X(cos,           floating,  input,  neg(g * sin(a)),                    normal,   rounding)        \
  X(tanh,          floating,  output, tanh_backward(g, out),              normal,   rounding)        \
  X(sigmoid,       floating,  output, sigmoid_backward(g, out),           normal,   rounding)        \
  X(relu,          same,      output, where(gt(out, 0.0), g, 0.0),        nonzero,  exact)           \
  X(silu,          floating,  input,  silu_backward(g, a),                normal,   rounding)        \
  /* exact gelu: x Phi(x) = 0.5 x (1 + erf(x / sqrt 2)) */                                           \
  X(gelu,          floating,  input,  gelu_backward(g, a),                normal,   rounding)        \
  /* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */                                              \
  X(gelu_tanh,     floating,  input,  gelu_tanh_backward(g, a),           normal,   rounding)        \
  X(logical_not,   predicate, nograd, -,                                  specials, exact)           \
  X(isnan,         predicate, nograd, -,                                  specials, exact)           \
  X(isfinite,      predicate, nograd, -,                                  specials, exact)

// ---------------------------------------------------------------- binary ops (broadcasting)
//  X(name,      kind,      scalar,    grad,   da,                             da_saves,        db,                            db_saves,          a_inputs, b_inputs, tol)
#define MLR_BINARY_OPS(X)                                                                                                                                                        \
  X(add,         same,      scalar,    rule,   g,                              0,               g,                             0,                 normal,   normal,   rounding)  \
  X(sub,         same,      scalar,    rule,   g,                              0,               neg(g),                        0,                 normal,   normal,   rounding)  \
  X(mul,         same,      scalar,    rule,   g * b,                          kSaveB,          g * a,                         kSaveA,            normal,   normal,   rounding)  \
  X(div,         floating,  scalar,    rule,   g / b,                          kSaveB,          neg(g * a / square(b)),        kSaveA | kSaveB,   normal,   nonzero,  rounding)  \
  X(pow,         same,      scalar,    rule,   g * b * pow(a, sub(b, 1.0)),    kSaveA | kSaveB, g * out * log(a),              kSaveA | kSaveOut, positive, normal,   rounding)  \
  X(maximum,     same,      no_scalar, nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(minimum,     same,      no_scalar, nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(eq,          predicate, scalar,    nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(ne,          predicate, scalar,    nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(lt,          predicate, scalar,    nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(le,          predicate, scalar,    nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(gt,          predicate, scalar,    nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(ge,          predicate, scalar,    nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(logical_and, predicate, no_scalar, nograd, -,                              0,               -,                             0,                 specials, specials, exact)     \
  X(logical_or,  predicate, no_scalar, nograd, -,                              0,               -,                             0,                 specials, specials, exact)

// ---------------------------------------------------------------- unary derivatives
// out = g * f'(.) with the saved tensor `saved` being the forward op's input or output.
//  X(name,                public function,    forward op, saved,  tol)
#define MLR_UNARY_BACKWARD_OPS(X)                                                    \
  X(sigmoid_from_output, sigmoid_backward,   sigmoid,    output, rounding)           \
  X(tanh_from_output,    tanh_backward,      tanh,       output, rounding)           \
  X(silu,                silu_backward,      silu,       input,  rounding)           \
  X(gelu,                gelu_backward,      gelu,       input,  rounding)           \
  X(gelu_tanh,           gelu_tanh_backward, gelu_tanh,  input,  rounding)

// ---------------------------------------------------------------- reductions over dims
// kind: adds (a sum of the elements, then `finish`) or extremum (an init value and `combine`).
//  X(name, kind,     tol)
#define MLR_REDUCE_OPS(X)        \
  X(sum,  adds,     summation)   \
  X(mean, adds,     summation)   \
  X(amax, extremum, exact)       \
  X(amin, extremum, exact)

// ---------------------------------------------------------------- derived: enums, names, traits

enum class OpKind : uint8_t { same, floating, predicate };
enum class ReduceKind : uint8_t { adds, extremum };
enum class InputDomain : uint8_t { normal, positive, nonzero, specials };
enum class SavedTensor : uint8_t { none, input, output, nograd };

// Which tensors a binary derivative reads (the da_saves / db_saves columns).
inline constexpr int kSaveA = 1, kSaveB = 2, kSaveOut = 4;

#define MLR_OP_TABLE_ENUMERATOR(name, ...) name,
enum class UnaryOp : uint8_t { MLR_UNARY_OPS(MLR_OP_TABLE_ENUMERATOR) };
enum class BinaryOp : uint8_t { MLR_BINARY_OPS(MLR_OP_TABLE_ENUMERATOR) };
enum class UnaryBackwardOp : uint8_t { MLR_UNARY_BACKWARD_OPS(MLR_OP_TABLE_ENUMERATOR) };
enum class ReduceOp : uint8_t { MLR_REDUCE_OPS(MLR_OP_TABLE_ENUMERATOR) };
#undef MLR_OP_TABLE_ENUMERATOR

#define MLR_OP_TABLE_COUNT(...) +1
inline constexpr size_t kUnaryOpCount = 0 MLR_UNARY_OPS(MLR_OP_TABLE_COUNT);
inline constexpr size_t kBinaryOpCount = 0 MLR_BINARY_OPS(MLR_OP_TABLE_COUNT);
inline constexpr size_t kUnaryBackwardOpCount = 0 MLR_UNARY_BACKWARD_OPS(MLR_OP_TABLE_COUNT);
inline constexpr size_t kReduceOpCount = 0 MLR_REDUCE_OPS(MLR_OP_TABLE_COUNT);
#undef MLR_OP_TABLE_COUNT

// Tolerance of a CUDA result against the CPU reference: |cuda - cpu| <= atol + rtol |cpu|.
struct DTypeTolerance {
  double atol, rtol;
};
struct OpTolerance {
  DTypeTolerance f32, bf16, f16;
};
namespace op_tolerance {
// Bit-identical on every IEEE device: sign flips, selections, comparisons.
inline constexpr OpTolerance exact = {{0, 0}, {0, 0}, {0, 0}};
// Both devices compute in f32 and round once; the device math library (expf, erff, ...) may differ
// from the host's by a few f32 ulps, which moves a 16-bit result by at most one ulp.
inline constexpr OpTolerance rounding = {{2e-5, 2e-5}, {2e-2, 2e-2}, {2e-3, 4e-3}};
// Sums in f32 in a different order (pairwise on the CPU, tree on the GPU), rounded once.
inline constexpr OpTolerance summation = {{1e-4, 1e-4}, {2e-2, 2e-2}, {4e-3, 4e-3}};
}  // namespace op_tolerance

// One row of a table, as data (names, kinds, domains, tolerances) for code that iterates the ops.
struct UnaryOpInfo {
  UnaryOp op;
  const char* name;
  OpKind kind;
  SavedTensor saves;
  InputDomain inputs;
  OpTolerance tol;
};
struct BinaryOpInfo {
  BinaryOp op;
  const char* name;
  OpKind kind;
  bool has_scalar_form;
  bool differentiable;
  InputDomain a_inputs, b_inputs;
  OpTolerance tol;
};
struct UnaryBackwardOpInfo {
  UnaryBackwardOp op;
  const char* name;
  const char* function;  // the public tensor function (tensor/ops.h)
  UnaryOp forward;
  SavedTensor saved;
  OpTolerance tol;
};
struct ReduceOpInfo {
  ReduceOp op;
  const char* name;
  ReduceKind kind;
  OpTolerance tol;
};

namespace op_table_detail {
inline constexpr bool scalar = true, no_scalar = false;
inline constexpr bool rule = true, nograd = false;
}  // namespace op_table_detail

#define MLR_UNARY_INFO(name, kind, saves, derivative, inputs, tol) \
  UnaryOpInfo{UnaryOp::name, #name, OpKind::kind, SavedTensor::saves, InputDomain::inputs, op_tolerance::tol},
inline constexpr UnaryOpInfo kUnaryOps[] = {MLR_UNARY_OPS(MLR_UNARY_INFO)};
#undef MLR_UNARY_INFO

#define MLR_BINARY_INFO(name, kind, scalar_form, grad, da, da_saves, db, db_saves, a_inputs, b_inputs, tol)       \
  BinaryOpInfo{BinaryOp::name,         #name,                     OpKind::kind,          op_table_detail::scalar_form, \
               op_table_detail::grad, InputDomain::a_inputs, InputDomain::b_inputs, op_tolerance::tol},
inline constexpr BinaryOpInfo kBinaryOps[] = {MLR_BINARY_OPS(MLR_BINARY_INFO)};
#undef MLR_BINARY_INFO

#define MLR_UNARY_BACKWARD_INFO(name, function, forward, saved, tol) \
  UnaryBackwardOpInfo{UnaryBackwardOp::name, #name, #function, UnaryOp::forward, SavedTensor::saved, op_tolerance::tol},
inline constexpr UnaryBackwardOpInfo kUnaryBackwardOps[] = {MLR_UNARY_BACKWARD_OPS(MLR_UNARY_BACKWARD_INFO)};
#undef MLR_UNARY_BACKWARD_INFO

#define MLR_REDUCE_INFO(name, kind, tol) ReduceOpInfo{ReduceOp::name, #name, ReduceKind::kind, op_tolerance::tol},
inline constexpr ReduceOpInfo kReduceOps[] = {MLR_REDUCE_OPS(MLR_REDUCE_INFO)};
#undef MLR_REDUCE_INFO

// The enumerators are declared in table order, so an op's row is at its own index.
constexpr const UnaryOpInfo& op_info(UnaryOp op) { return kUnaryOps[static_cast<size_t>(op)]; }
constexpr const BinaryOpInfo& op_info(BinaryOp op) { return kBinaryOps[static_cast<size_t>(op)]; }
constexpr const UnaryBackwardOpInfo& op_info(UnaryBackwardOp op) { return kUnaryBackwardOps[static_cast<size_t>(op)]; }
constexpr const ReduceOpInfo& op_info(ReduceOp op) { return kReduceOps[static_cast<size_t>(op)]; }

constexpr const char* op_name(UnaryOp op) { return op_info(op).name; }
constexpr const char* op_name(BinaryOp op) { return op_info(op).name; }
constexpr const char* op_name(UnaryBackwardOp op) { return op_info(op).name; }
constexpr const char* op_name(ReduceOp op) { return op_info(op).name; }

constexpr OpKind op_kind(UnaryOp op) { return op_info(op).kind; }
constexpr OpKind op_kind(BinaryOp op) { return op_info(op).kind; }
constexpr bool is_predicate(UnaryOp op) { return op_kind(op) == OpKind::predicate; }
constexpr bool is_predicate(BinaryOp op) { return op_kind(op) == OpKind::predicate; }
// Whether the math needs a floating dtype (the front-end computes integer inputs in f32).
constexpr bool is_float_math(UnaryOp op) { return op_kind(op) == OpKind::floating; }
constexpr bool is_float_math(BinaryOp op) { return op_kind(op) == OpKind::floating; }

}  // namespace mlr

// Operation codes shared by the CPU and CUDA kernels (the front-end in tensor/ops_*.cpp
// validates, allocates and dispatches; kernels compute).
#pragma once

#include <cstdint>

namespace mlr {

enum class BinaryOp : uint8_t {
  add, sub, mul, div, pow, maximum, minimum,        // arithmetic: output dtype = input dtype
  eq, ne, lt, le, gt, ge, logical_and, logical_or,  // predicates: output dtype bool
};
enum class UnaryOp : uint8_t {
  neg, abs, sign, exp, log, sqrt, rsqrt, square, reciprocal, sin, cos, tanh, sigmoid, relu, silu, gelu,
  gelu_tanh,
  logical_not, isnan, isfinite,  // predicates: output dtype bool
};
// out = g * f'(.) with the saved tensor named after each op
enum class UnaryBackwardOp : uint8_t {
  sigmoid_from_output,  // g * y (1 - y)
  tanh_from_output,     // g * (1 - y^2)
  silu,                 // g * s (1 + x (1 - s))
  gelu,                 // g * (Phi(x) + x phi(x))
  gelu_tanh,            // derivative of the tanh approximation
};
enum class ReduceOp : uint8_t { sum, mean, amax, amin };

inline bool is_predicate(BinaryOp op) { return op >= BinaryOp::eq; }
inline bool is_predicate(UnaryOp op) { return op >= UnaryOp::logical_not; }

}  // namespace mlr

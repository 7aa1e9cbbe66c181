// Elementwise front-ends: validate, pick the result dtype and shape, allocate the output on the
// input's device, expand the inputs to the output shape (casting them first when their dtypes
// differ from the compute dtype), then dispatch to the kernel (tensor/kernels/*/elementwise.*).
//
// Result dtypes, by the op's kind in tensor/op_table.h (tensor/dtype.h has the promotion rules):
//   binary same (add sub mul pow ...)   promote_types(a, b); integers stay integers
//   binary floating (div)               promote_types(a, b), then f32 if that is not floating (true division)
//   binary predicate (eq ... logical_*) bool (compared in promote_types(a, b))
//   unary same (neg abs sign ...)       the input's dtype (neg of bool is an error)
//   unary floating (exp log ...)        the input's dtype if floating, else f32
//   unary predicate (isnan ...)         bool
// A C++ double scalar counts as floating when it has a fractional part or is not finite, so
// i64 + 2.0 stays i64 while i64 * 0.5 is f32 (promote_with_scalar). pow of an integer tensor to a
// negative integer power is rejected, as torch does.
#include <cmath>
#include <limits>

#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

bool scalar_is_floating(double v) { return !std::isfinite(v) || v != std::floor(v) || std::fabs(v) >= 9.2e18; }

void check_defined(const char* op, const Tensor& t, const char* what) {
  MLR_CHECK(t.defined(), "{}: {} is an undefined tensor", op, what);
}

void check_same_device(const char* op, const Tensor& a, const Tensor& b) {
  MLR_CHECK(a.device() == b.device(), "{}: tensors are on different devices ({} and {})", op, a.device().str(),
            b.device().str());
}

// Whether `from` broadcasts to exactly `to`.
bool broadcasts_to(const Shape& from, const Shape& to) {
  if (from.size() > to.size()) return false;
  const size_t lead = to.size() - from.size();
  for (size_t i = 0; i < from.size(); ++i)
    if (from[i] != 1 && from[i] != to[lead + i]) return false;
  return true;
}

// t in dtype `dtype` (a copy only when the dtype changes), viewed with `shape`.
Tensor prepared(const Tensor& t, DType dtype, const Shape& shape) { return t.to(dtype).expand(shape); }

Tensor binary_op(BinaryOp op, const char* name, const Tensor& a, const Tensor& b) {
  check_defined(name, a, "a");
  check_defined(name, b, "b");
  check_same_device(name, a, b);
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), name);
  DType compute = promote_types(a.dtype(), b.dtype());
  MLR_CHECK(!(op == BinaryOp::sub && compute == DType::boolean),
            "{}: both operands are bool; subtracting bool tensors is not supported (cast to an integer dtype)", name);
  if (is_float_math(op) && !is_floating(compute)) compute = DType::f32;
  Tensor out = empty(shape, {is_predicate(op) ? DType::boolean : compute, a.device()});
  if (out.numel() == 0) return out;
  MLR_DISPATCH(a.device(), binary, op, out, prepared(a, compute, shape), prepared(b, compute, shape));
  return out;
}

Tensor binary_scalar_op(BinaryOp op, const char* name, const Tensor& a, double b) {
  check_defined(name, a, "a");
  DType compute = promote_with_scalar(a.dtype(), scalar_is_floating(b));
  if (is_float_math(op) && !is_floating(compute)) compute = DType::f32;
  MLR_CHECK(!(op == BinaryOp::pow && !is_floating(compute) && b < 0),
            "{}: an integer tensor ({}) to a negative integer power ({}) is not supported; cast to a floating dtype",
            name, a.dtype(), b);
  Tensor out = empty(a.shape(), {is_predicate(op) ? DType::boolean : compute, a.device()});
  if (out.numel() == 0) return out;
  MLR_DISPATCH(a.device(), binary_scalar, op, out, a.to(compute), b);
  return out;
}

Tensor unary_op(UnaryOp op, const char* name, const Tensor& a) {
  check_defined(name, a, "input");
  MLR_CHECK(!(op == UnaryOp::neg && a.dtype() == DType::boolean),
            "{}: negating a bool tensor is not supported (use logical_not)", name);
  const DType compute = is_float_math(op) && !a.is_floating_point() ? DType::f32 : a.dtype();
  Tensor out = empty(a.shape(), {is_predicate(op) ? DType::boolean : compute, a.device()});
  if (out.numel() == 0) return out;
  MLR_DISPATCH(a.device(), unary, op, out, a.to(compute));
  return out;
}

Tensor unary_backward_op(UnaryBackwardOp op, const char* name, const Tensor& g, const Tensor& saved) {
  check_defined(name, g, "g");
  check_defined(name, saved, "saved tensor");
  check_same_device(name, g, saved);
  const Shape shape = broadcast_shapes(g.shape(), saved.shape(), name);
  DType compute = promote_types(g.dtype(), saved.dtype());
  if (!is_floating(compute)) compute = DType::f32;
  Tensor out = empty(shape, {compute, g.device()});
  if (out.numel() == 0) return out;
  MLR_DISPATCH(g.device(), unary_backward, op, out, prepared(g, compute, shape), prepared(saved, compute, shape));
  return out;
}

}  // namespace

// ---------------------------------------------------------------- binary (one per table entry)

#define MLR_DEFINE_BINARY_scalar(name) \
  Tensor name(const Tensor& a, double b) { return binary_scalar_op(BinaryOp::name, #name, a, b); }
#define MLR_DEFINE_BINARY_no_scalar(name)
#define MLR_DEFINE_BINARY(name, kind, scalar_form, ...)                                           \
  Tensor name(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::name, #name, a, b); } \
  MLR_DEFINE_BINARY_##scalar_form(name)
MLR_BINARY_OPS(MLR_DEFINE_BINARY)
#undef MLR_DEFINE_BINARY
#undef MLR_DEFINE_BINARY_scalar
#undef MLR_DEFINE_BINARY_no_scalar

Tensor apply(BinaryOp op, const Tensor& a, const Tensor& b) { return binary_op(op, op_name(op), a, b); }
Tensor apply(BinaryOp op, const Tensor& a, double b) { return binary_scalar_op(op, op_name(op), a, b); }

// ---------------------------------------------------------------- in place

namespace {
// An in-place write needs every element of `a` at its own address: a broadcast view (stride 0 on
// a dimension of size > 1) would have several elements share one.
void check_writable(const char* op, const Tensor& a) {
  for (int64_t d = 0; d < a.dim(); ++d)
    MLR_CHECK(a.size(d) <= 1 || a.stride(d) != 0,
              "{}: cannot write in place into a broadcast view (shape {}, strides {})", op, shape_str(a.shape()),
              shape_str(a.strides()));
}
}  // namespace

Tensor& add_(Tensor& a, const Tensor& b) {
  check_defined("add_", a, "a");
  check_defined("add_", b, "b");
  check_same_device("add_", a, b);
  MLR_CHECK(broadcasts_to(b.shape(), a.shape()), "add_: shape {} does not broadcast to {}", shape_str(b.shape()),
            shape_str(a.shape()));
  check_writable("add_", a);
  if (a.numel() == 0) return a;
  Tensor src = b.to(a.dtype());
  // b may alias a in another layout (add_(x, x.t())): read from a copy so no element is read
  // after it was overwritten. The same view of the same storage is safe (each element reads itself).
  if (src.shares_storage(a) &&
      !(src.offset() == a.offset() && src.shape() == a.shape() && src.strides() == a.strides()))
    src = src.clone();
  MLR_DISPATCH(a.device(), binary, BinaryOp::add, a, a, src.expand(a.shape()));
  return a;
}

Tensor& mul_(Tensor& a, double b) {
  check_defined("mul_", a, "a");
  const DType result = promote_with_scalar(a.dtype(), scalar_is_floating(b));
  MLR_CHECK(result == a.dtype(), "mul_: multiplying a {} tensor by {} gives {}, which cannot be stored in place",
            a.dtype(), b, result);
  check_writable("mul_", a);
  if (a.numel() == 0) return a;
  MLR_DISPATCH(a.device(), binary_scalar, BinaryOp::mul, a, a, b);
  return a;
}

// ---------------------------------------------------------------- unary (one per table entry)

#define MLR_DEFINE_UNARY(name, ...) \
  Tensor name(const Tensor& a) { return unary_op(UnaryOp::name, #name, a); }
MLR_UNARY_OPS(MLR_DEFINE_UNARY)
#undef MLR_DEFINE_UNARY

#define MLR_DEFINE_UNARY_BACKWARD(name, function, ...) \
  Tensor function(const Tensor& g, const Tensor& saved) {   \
    return unary_backward_op(UnaryBackwardOp::name, #function, g, saved); \
  }
MLR_UNARY_BACKWARD_OPS(MLR_DEFINE_UNARY_BACKWARD)
#undef MLR_DEFINE_UNARY_BACKWARD

Tensor apply(UnaryOp op, const Tensor& a) { return unary_op(op, op_name(op), a); }
Tensor apply(UnaryBackwardOp op, const Tensor& g, const Tensor& saved) {
  return unary_backward_op(op, op_info(op).function, g, saved);
}

Tensor clamp(const Tensor& a, std::optional<double> min, std::optional<double> max) {
  check_defined("clamp", a, "input");
  MLR_CHECK(!(min && std::isnan(*min)) && !(max && std::isnan(*max)), "clamp: a bound is NaN");
  // Bounds are scalars: a fractional bound on an integer tensor makes the result f32.
  const bool floating_bound = (min && scalar_is_floating(*min)) || (max && scalar_is_floating(*max));
  DType dtype = a.dtype() == DType::boolean ? DType::boolean : promote_with_scalar(a.dtype(), floating_bound);
  Tensor out = empty(a.shape(), {dtype, a.device()});
  if (out.numel() == 0) return out;
  const double inf = std::numeric_limits<double>::infinity();
  MLR_DISPATCH(a.device(), clamp, out, a.to(dtype), min.value_or(-inf), max.value_or(inf));
  return out;
}

// ---------------------------------------------------------------- selection

Tensor where(const Tensor& cond, const Tensor& a, const Tensor& b) {
  check_defined("where", cond, "cond");
  check_defined("where", a, "a");
  check_defined("where", b, "b");
  MLR_CHECK(cond.dtype() == DType::boolean, "where: cond has dtype {}, expected bool", cond.dtype());
  check_same_device("where", cond, a);
  check_same_device("where", cond, b);
  const Shape shape = broadcast_shapes(broadcast_shapes(cond.shape(), a.shape(), "where"), b.shape(), "where");
  const DType dtype = promote_types(a.dtype(), b.dtype());
  Tensor out = empty(shape, {dtype, a.device()});
  if (out.numel() == 0) return out;
  MLR_DISPATCH(a.device(), where, out, cond.expand(shape), prepared(a, dtype, shape), prepared(b, dtype, shape));
  return out;
}

Tensor where(const Tensor& cond, const Tensor& a, double b) {
  check_defined("where", a, "a");
  const DType dtype = promote_with_scalar(a.dtype(), scalar_is_floating(b));
  return where(cond, a, scalar_tensor(b, {dtype, a.device()}));
}

Tensor masked_fill(const Tensor& a, const Tensor& mask, double value) {
  check_defined("masked_fill", a, "a");
  check_defined("masked_fill", mask, "mask");
  MLR_CHECK(mask.dtype() == DType::boolean, "masked_fill: mask has dtype {}, expected bool", mask.dtype());
  check_same_device("masked_fill", a, mask);
  MLR_CHECK(broadcasts_to(mask.shape(), a.shape()), "masked_fill: mask shape {} does not broadcast to {}",
            shape_str(mask.shape()), shape_str(a.shape()));
  // The fill value takes a's dtype (as torch): masked_fill never changes the dtype.
  Tensor out = empty(a.shape(), a.options());
  if (out.numel() == 0) return out;
  Tensor fill = scalar_tensor(value, a.options()).expand(a.shape());
  MLR_DISPATCH(a.device(), where, out, mask.expand(a.shape()), fill, a);
  return out;
}

// ---------------------------------------------------------------- dtype conversion

Tensor cast(const Tensor& a, DType dtype) {
  check_defined("cast", a, "input");
  Tensor out = empty(a.shape(), {dtype, a.device()});
  out.copy_(a);
  return out;
}

}  // namespace mlr

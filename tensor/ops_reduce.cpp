// Reduction and softmax front-ends, sum_to, and the comparison helpers for tests. Kernels live in
// tensor/kernels/*/reduce.* and softmax.*; the math is stated there.
//
// Result dtypes: sum of bool/integers is i64, of floats the input's dtype; mean needs a floating
// input; amax/amin keep the dtype; argmax is i64; logsumexp and softmax compute integer inputs
// in f32. Over zero elements: sum 0, mean NaN, amax/amin/argmax an error, logsumexp -inf.
#include <algorithm>
#include <cmath>
#include <limits>

#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

void check_defined(const char* op, const Tensor& t, const char* what) {
  MLR_CHECK(t.defined(), "{}: {} is an undefined tensor", op, what);
}

struct ReducePlan {
  std::vector<bool> mask;  // per dimension of the input: reduced?
  Shape keep_shape;        // reduced dims as size 1
  Shape out_shape;         // what the caller gets (keep_shape, or with the reduced dims dropped)
  int64_t count = 1;       // elements per output
};

ReducePlan plan_reduce(const char* op, const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  ReducePlan p;
  p.mask.assign(static_cast<size_t>(a.dim()), dims.empty());
  std::vector<bool> seen(static_cast<size_t>(std::max<int64_t>(a.dim(), 1)), false);
  for (int64_t d : dims) {
    const int64_t w = wrap_dim(d, a.dim(), op);
    MLR_CHECK(!seen[w], "{}: dimension {} repeated in dims [{}]", op, w, fmt::join(dims, ", "));
    seen[w] = true;
    if (a.dim() > 0) p.mask[w] = true;
  }
  for (int64_t d = 0; d < a.dim(); ++d) {
    p.keep_shape.push_back(p.mask[d] ? 1 : a.size(d));
    if (p.mask[d]) p.count *= a.size(d);
    if (!p.mask[d] || keepdim) p.out_shape.push_back(p.mask[d] ? 1 : a.size(d));
  }
  return p;
}

Tensor reduce_op(ReduceOp op, const char* name, const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  check_defined(name, a, "input");
  const ReducePlan p = plan_reduce(name, a, dims, keepdim);
  DType dtype = a.dtype();
  switch (op) {
    case ReduceOp::sum:
      if (!a.is_floating_point()) dtype = DType::i64;
      break;
    case ReduceOp::mean:
      MLR_CHECK(a.is_floating_point(),
                "mean: dtype {} is not supported (the mean of integers is not an integer; cast to a floating "
                "dtype first)",
                a.dtype());
      break;
    case ReduceOp::amax:
    case ReduceOp::amin:
      MLR_CHECK(p.count > 0, "{}: cannot reduce over zero elements (shape {}, dims [{}])", name,
                shape_str(a.shape()), fmt::join(dims, ", "));
      break;
  }
  Tensor out = empty(p.keep_shape, {dtype, a.device()});
  if (out.numel() > 0) MLR_DISPATCH(a.device(), reduce, op, out, a, p.mask);
  return out.view(p.out_shape);
}

// Shape with dimension d dropped (keepdim = false) or set to 1.
Shape row_result_shape(const Shape& s, int64_t d, bool keepdim) {
  Shape r = s;
  if (keepdim) r[d] = 1;
  else r.erase(r.begin() + d);
  return r;
}

DType floating_or_f32(DType t) { return is_floating(t) ? t : DType::f32; }

}  // namespace

// ---------------------------------------------------------------- reductions

#define MLR_DEFINE_REDUCE(name, ...)                                             \
  Tensor name(const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) { \
    return reduce_op(ReduceOp::name, #name, a, dims, keepdim);                   \
  }
MLR_REDUCE_OPS(MLR_DEFINE_REDUCE)
#undef MLR_DEFINE_REDUCE

Tensor apply(ReduceOp op, const Tensor& a, const std::vector<int64_t>& dims, bool keepdim) {
  return reduce_op(op, op_name(op), a, dims, keepdim);
}

Tensor argmax(const Tensor& a, int64_t dim, bool keepdim) {
  check_defined("argmax", a, "input");
  const int64_t d = wrap_dim(dim, a.dim(), "argmax");
  if (a.dim() == 0) return zeros({}, {DType::i64, a.device()});  // the one element is the maximum
  MLR_CHECK(a.size(d) > 0, "argmax: dimension {} of shape {} is empty", d, shape_str(a.shape()));
  Tensor out = empty(row_result_shape(a.shape(), d, true), {DType::i64, a.device()});
  if (out.numel() > 0) MLR_DISPATCH(a.device(), argmax, out, a, d);
  return out.view(row_result_shape(a.shape(), d, keepdim));
}

Tensor topk_mask(const Tensor& scores, int64_t k, const Tensor& bias) {
  check_defined("topk_mask", scores, "scores");
  MLR_CHECK(scores.is_floating_point() && scores.dim() >= 1, "topk_mask: scores must be floating with at least 1 "
            "dimension, got {} {}", scores.dtype(), shape_str(scores.shape()));
  const int64_t n = scores.size(-1);
  MLR_CHECK(k >= 0 && k <= n, "topk_mask: k = {} is outside [0, {}] (the last dimension of {})", k, n,
            shape_str(scores.shape()));
  Tensor keys_bias;
  if (bias.defined()) {
    MLR_CHECK(bias.dim() == 1 && bias.size(0) == n && bias.is_floating_point(),
              "topk_mask: bias must be a floating 1-D tensor of size {}, got {} {}", n, bias.dtype(),
              shape_str(bias.shape()));
    MLR_CHECK(bias.device() == scores.device(), "topk_mask: bias is on {}, scores on {}", bias.device().str(),
              scores.device().str());
    keys_bias = bias.to(DType::f64).contiguous();
  }
  Tensor rows = scores.contiguous().reshape({-1, n});
  Tensor out = empty(rows.shape(), {DType::boolean, scores.device()});
  if (out.numel() > 0) MLR_DISPATCH(scores.device(), topk_mask, out, rows, k, keys_bias);
  return out.reshape(scores.shape());
}

Tensor logsumexp(const Tensor& a, int64_t dim, bool keepdim) {
  check_defined("logsumexp", a, "input");
  const int64_t d = wrap_dim(dim, a.dim(), "logsumexp");
  const DType dtype = floating_or_f32(a.dtype());
  Tensor x = a.dim() == 0 ? a.reshape({1}) : a;
  Tensor out = empty(row_result_shape(x.shape(), d, true), {dtype, a.device()});
  if (out.numel() > 0) MLR_DISPATCH(a.device(), logsumexp, out, x.to(dtype), d);
  if (a.dim() == 0) return out.view({});
  return out.view(row_result_shape(a.shape(), d, keepdim));
}

Tensor sum_to(const Tensor& a, const Shape& shape) {
  check_defined("sum_to", a, "input");
  bool ok = shape.size() <= a.shape().size();
  const size_t lead = ok ? a.shape().size() - shape.size() : 0;
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] == 1 || shape[i] == a.shape()[lead + i];
  MLR_CHECK(ok, "sum_to: shape {} does not broadcast to {}", shape_str(shape), shape_str(a.shape()));
  // Nothing was broadcast: the input itself (callers treat results as read-only).
  if (shape == a.shape()) return a;
  std::vector<int64_t> dims;
  for (size_t i = 0; i < a.shape().size(); ++i)
    if (i < lead || (shape[i - lead] == 1 && a.shape()[i] != 1)) dims.push_back(static_cast<int64_t>(i));
  return sum(a, dims, /*keepdim=*/true).view(shape);
}

// ---------------------------------------------------------------- softmax

namespace {

Tensor softmax_op(bool log, const char* name, const Tensor& a, int64_t dim) {
  check_defined(name, a, "input");
  int64_t d = wrap_dim(dim, a.dim(), name);
  const DType dtype = floating_or_f32(a.dtype());
  Tensor x = a.to(dtype);
  if (a.dim() == 0) x = x.reshape({1});
  Tensor out = empty(x.shape(), {dtype, a.device()});
  if (out.numel() > 0) {
    if (log) MLR_DISPATCH(a.device(), log_softmax, out, x, d);
    else MLR_DISPATCH(a.device(), softmax, out, x, d);
  }
  return out.view(a.shape());
}

Tensor softmax_backward_op(bool log, const char* name, const Tensor& g, const Tensor& y, int64_t dim) {
  check_defined(name, g, "g");
  check_defined(name, y, "y");
  MLR_CHECK(g.device() == y.device(), "{}: tensors are on different devices ({} and {})", name, g.device().str(),
            y.device().str());
  MLR_CHECK(g.shape() == y.shape(), "{}: g shape {} and y shape {} differ", name, shape_str(g.shape()),
            shape_str(y.shape()));
  const int64_t d = wrap_dim(dim, y.dim(), name);
  const DType dtype = floating_or_f32(promote_types(g.dtype(), y.dtype()));
  Tensor gc = g.to(dtype), yc = y.to(dtype);
  if (y.dim() == 0) {
    gc = gc.reshape({1});
    yc = yc.reshape({1});
  }
  Tensor dx = empty(yc.shape(), {dtype, y.device()});
  if (dx.numel() > 0) {
    if (log) MLR_DISPATCH(y.device(), log_softmax_backward, dx, gc, yc, d);
    else MLR_DISPATCH(y.device(), softmax_backward, dx, gc, yc, d);
  }
  return dx.view(y.shape());
}

}  // namespace

Tensor softmax(const Tensor& a, int64_t dim) { return softmax_op(false, "softmax", a, dim); }
Tensor log_softmax(const Tensor& a, int64_t dim) { return softmax_op(true, "log_softmax", a, dim); }
Tensor softmax_backward(const Tensor& g, const Tensor& y, int64_t dim) {
  return softmax_backward_op(false, "softmax_backward", g, y, dim);
}
Tensor log_softmax_backward(const Tensor& g, const Tensor& y, int64_t dim) {
  return softmax_backward_op(true, "log_softmax_backward", g, y, dim);
}

// ---------------------------------------------------------------- comparison helpers

namespace {
// Both operands broadcast to one shape, as f64 host values (the tensors may live on different
// devices: tests compare CUDA results with CPU references).
std::pair<std::vector<double>, std::vector<double>> host_pair(const char* op, const Tensor& a, const Tensor& b) {
  check_defined(op, a, "a");
  check_defined(op, b, "b");
  const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
  return {a.expand(shape).to_vector<double>(), b.expand(shape).to_vector<double>()};
}
}  // namespace

bool allclose(const Tensor& a, const Tensor& b, double rtol, double atol) {
  auto [x, y] = host_pair("allclose", a, b);
  for (size_t i = 0; i < x.size(); ++i) {
    // Equal values (infinities included) are close; an unequal infinity or a NaN is close to
    // nothing (the tolerance rtol * |inf| would otherwise admit anything).
    if (x[i] == y[i]) continue;
    if (std::isinf(x[i]) || std::isinf(y[i])) return false;
    if (!(std::fabs(x[i] - y[i]) <= atol + rtol * std::fabs(y[i]))) return false;
  }
  return true;
}

double max_abs_diff(const Tensor& a, const Tensor& b) {
  auto [x, y] = host_pair("max_abs_diff", a, b);
  double m = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i] == y[i]) continue;
    const double d = std::fabs(x[i] - y[i]);
    if (std::isnan(d)) return std::numeric_limits<double>::quiet_NaN();
    m = std::max(m, d);
  }
  return m;
}

}  // namespace mlr

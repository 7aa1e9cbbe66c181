// autograd/derivatives.cpp: what each differentiable op saves for backward, and its gradient.
// g is the gradient of the output; "(summed)" means summed back to the input's shape after
// broadcasting. A rule saves a tensor only when an input whose gradient needs it requires grad.
//
// The unary and binary ops of tensor/op_table.h (add sub mul div pow, neg exp log ... gelu_tanh)
// have their rules in the table's saves and derivative columns; their functions are generated below.
// The other ops:
//
//   op              saves                                  gradient
//   add_scalar      -                                      da = g                              (a + s)
//   sub_scalar      -                                      da = g                              (a - s)
//   rsub_scalar     -                                      da = -g                             (s - a)
//   mul_scalar      -                                      da = g*s                            (a * s)
//   div_scalar      -                                      da = g/s                            (a / s)
//   rdiv_scalar     a                                      da = -g*s/a^2                       (s / a)
//   pow_scalar      a                                      da = g*s*a^(s-1)   (0 when s = 0)   (a ^ s)
//   clamp           mask = min <= a <= max (bool)          da = g where mask, else 0
//   where(c, a, b)  c                                      da = g where c, db = g where !c     (summed)
//   masked_fill     mask                                   da = g where !mask, else 0
//   sum             -                                      da = g broadcast over the reduced dims
//   mean            -                                      da = g/n broadcast (n = reduced count)
//   amax            mask = (a == max) (bool)               da = g*mask/count(mask)   (ties share)
//   logsumexp       a, out                                 da = g*exp(a - out)
//   softmax         out                                    da = out*(g - sum(g*out, dim))
//   log_softmax     out                                    da = g - exp(out)*sum(g, dim)
//   matmul(a, b)    b if a needs grad, a if b needs grad   da = g @ b^T, db = a^T @ g          (summed)
//   linear(x,w,b)   w if x needs grad, x if w needs grad   dx = g @ w, dw = g^T @ x, db = sum_rows(g)
//   reshape, view   -                                      da = g reshaped to a's shape  (also flatten)
//   permute         -                                      da = g permuted by the inverse order
//   transpose       -                                      da = g transposed back
//   narrow, slice   -                                      da = zeros with the same window = g
//   select          -                                      da = zeros with the selected index = g
//   expand          -                                      da = g summed over the expanded dims
//   squeeze         -                                      da = g reshaped to a's shape
//   unsqueeze       -                                      da = g reshaped to a's shape
//   contiguous      -                                      da = g
//   cast            -                                      da = g cast back to a's dtype
//   cat             -                                      da_i = g's window of input i along dim
//   stack           -                                      da_i = g.select(dim, i)
//   split           -                                      da = cat(g_0, ..., g_n) (missing g_i: 0) (also chunk)
//   index_select    index                                  da = index_add(zeros, dim, index, g)
//   embedding       ids                                    dW = embedding_backward(g, ids) (scatter-add)
// LLaMA ops, as custom Functions (autograd/function.h) over the kernels of tensor/nn_ops.h:
//   rmsnorm(x, w)   x, w, rstd                             dx, dw = rmsnorm_backward
//   rope(x)         cos, sin tables                        dx = rope_backward (rotation by -theta)
//   swiglu(gate,up) gate, up                               dgate, dup = swiglu_backward
//   attention       q, k, v, out, lse                      dq, dk, dv = attention_backward
//   cross_entropy   logits, targets, lse                   dlogits = g_row*(softmax - onehot(t)), 0 if ignored
//   gated_lowrank   x, A, B, s, mask, h, g                 dx, dA, dB, ds = gated_lowrank_backward
//   (x, A, B, s, m) (SMoRA's routed update)
//   routed_lowrank  x, x_r, A, B, W, s, mask, h, g         gated_lowrank_backward, then router_backward for
//   (x, x_r, A, B, W; s = score(x_r W^T) given)            dx_r, dW from its ds (x_r = x: one dx, summed in place)
//                   (the mean and sum reductions are composed from sum and div)
#include <algorithm>
#include <functional>
#include <numeric>

#include "autograd/function.h"
#include "autograd/functions.h"
#include "tensor/ops.h"

namespace mlr {

const std::vector<std::string>& differentiable_ops() {
  static const std::vector<std::string> ops = [] {
    std::vector<std::string> names;
    for (const BinaryOpInfo& op : kBinaryOps)
      if (op.differentiable) names.emplace_back(op.name);
    for (const UnaryOpInfo& op : kUnaryOps)
      if (op.saves != SavedTensor::nograd) names.emplace_back(op.name);
    for (const char* name :
         {"add_scalar", "sub_scalar", "rsub_scalar", "mul_scalar", "div_scalar", "rdiv_scalar", "pow_scalar", "clamp",
          "where", "masked_fill", "sum", "mean", "amax", "logsumexp", "softmax", "log_softmax", "matmul", "linear",
          "reshape", "view", "permute", "transpose", "narrow", "slice", "select", "expand", "squeeze", "unsqueeze",
          "contiguous", "cast", "cat", "stack", "split", "index_select", "embedding", "rmsnorm", "rope", "swiglu",
          "attention", "cross_entropy", "gated_lowrank",
          "routed_lowrank"})
      names.emplace_back(name);
    return names;
  }();
  return ops;
}

namespace {

using Grads = std::vector<Tensor>;

// What a rule's backward knows about the op's inputs.
class Inputs {
 public:
  explicit Inputs(const Node& node) : node_(node) {}
  bool need(size_t i) const { return node_.needs_input_grad(i); }
  const Shape& shape(size_t i) const { return node_.input_meta()[i].shape; }
  DType dtype(size_t i) const { return node_.input_meta()[i].dtype; }
  // The gradient of input i: f() summed to the input's shape; undefined (f not run) when input i
  // needs no gradient.
  template <typename F> Tensor grad(size_t i, F&& f) const {
    if (!need(i)) return Tensor();
    Tensor g = f();
    return g.shape() == shape(i) ? g : sum_to(g, shape(i));
  }

 private:
  const Node& node_;
};

using Rule = std::function<Grads(const std::vector<Tensor>& grads, const Inputs& in)>;

// A node whose backward is a rule; the rule's captures are exactly what the op saved, so
// releasing the node drops the rule.
class RuleNode final : public Node {
 public:
  RuleNode(const char* name, Rule rule) : Node(name), rule_(std::move(rule)) {}
  std::vector<Tensor> apply(std::vector<Tensor>&& grads) override {
    check_not_released();
    return rule_(grads, Inputs(*this));
  }
  void release_saved() override {
    rule_ = nullptr;
    released_ = true;
  }

 private:
  Rule rule_;
};

// One application of an op being recorded.
class Op {
 public:
  Op(const char* name, std::vector<Variable> inputs)
      : name_(name), inputs_(std::move(inputs)), needs_(detail::input_needs_grad(inputs_)) {
    any_ = std::find(needs_.begin(), needs_.end(), true) != needs_.end();
  }
  // Whether input i needs a gradient (grad mode on and it requires grad).
  bool need(size_t i) const { return needs_[i]; }

  // Single output; rule(g, in) -> one gradient per input.
  template <typename F> Variable out(Tensor y, F rule) {
    if (!any_) return Variable(std::move(y));
    auto node = std::make_shared<RuleNode>(
        name_, [rule = std::move(rule)](const std::vector<Tensor>& g, const Inputs& in) { return rule(g[0], in); });
    detail::connect_inputs(*node, inputs_, needs_);
    return detail::make_output(node, std::move(y));
  }
  // Several outputs; rule(gs, in) with one gradient per output (zeros for unused outputs).
  template <typename F> std::vector<Variable> outs(std::vector<Tensor> ys, F rule) {
    std::vector<Variable> result;
    if (!any_) {
      for (Tensor& y : ys) result.emplace_back(std::move(y));
      return result;
    }
    auto node = std::make_shared<RuleNode>(name_, Rule(std::move(rule)));
    detail::connect_inputs(*node, inputs_, needs_);
    for (Tensor& y : ys) result.push_back(detail::make_output(node, std::move(y)));
    return result;
  }

 private:
  const char* name_;
  std::vector<Variable> inputs_;
  std::vector<bool> needs_;
  bool any_ = false;
};

// `t` when `cond` holds, else nothing: how a rule saves only what backward will use.
Tensor keep(bool cond, const Tensor& t) { return cond ? t : Tensor(); }

// Sorted, wrapped reduction dims (empty = all).
std::vector<int64_t> reduced_dims(const std::vector<int64_t>& dims, int64_t ndim, const char* op) {
  std::vector<int64_t> out;
  if (dims.empty()) {
    out.resize(static_cast<size_t>(ndim));
    std::iota(out.begin(), out.end(), 0);
  } else {
    for (int64_t d : dims) out.push_back(wrap_dim(d, ndim, op));
    std::sort(out.begin(), out.end());
    out.erase(std::unique(out.begin(), out.end()), out.end());
  }
  return out;
}

// A reduction's output gradient with the reduced dims put back as size 1 (keepdim layout).
Tensor keepdim_grad(const Tensor& g, const std::vector<int64_t>& sorted_dims, bool keepdim) {
  if (keepdim) return g;
  Tensor r = g;
  for (int64_t d : sorted_dims) r = r.unsqueeze(d);
  return r;
}

}  // namespace

// ---------------------------------------------------------------- unary and binary ops of the table
// A binary rule keeps a, b and out only when an input whose gradient reads them needs a gradient
// (the da_saves and db_saves columns); a unary rule keeps its input or output as `saves` says.

#define MLR_BINARY_RULE_rule(name, da, da_saves, db, db_saves)                                                 \
  Variable name(const Variable& x, const Variable& y) {                                                         \
    Op op(#name, {x, y});                                                                                       \
    Tensor result = mlr::name(x.data(), y.data());                                                              \
    auto saved = [&](int tensor) {                                                                              \
      return (op.need(0) && ((da_saves) & tensor) != 0) || (op.need(1) && ((db_saves) & tensor) != 0);          \
    };                                                                                                          \
    return op.out(result, [a = keep(saved(kSaveA), x.data()), b = keep(saved(kSaveB), y.data()),                \
                           out = keep(saved(kSaveOut), result)](const Tensor& g, const Inputs& in) -> Grads {   \
      return {in.grad(0, [&] { return Tensor(da); }), in.grad(1, [&] { return Tensor(db); })};                  \
    });                                                                                                         \
  }
#define MLR_BINARY_RULE_nograd(name, da, da_saves, db, db_saves)
#define MLR_BINARY_RULE(name, kind, scalar_form, grad, da, da_saves, db, db_saves, ...) \
  MLR_BINARY_RULE_##grad(name, da, da_saves, db, db_saves)
MLR_BINARY_OPS(MLR_BINARY_RULE)
#undef MLR_BINARY_RULE
#undef MLR_BINARY_RULE_rule
#undef MLR_BINARY_RULE_nograd

#define MLR_UNARY_RULE_none(name, derivative)                                                                  \
  Variable name(const Variable& x) {                                                                          \
    Op op(#name, {x});                                                                                        \
    return op.out(mlr::name(x.data()), [](const Tensor& g, const Inputs&) -> Grads { return {derivative}; }); \
  }
#define MLR_UNARY_RULE_input(name, derivative)                                           \
  Variable name(const Variable& x) {                                                    \
    Op op(#name, {x});                                                                  \
    return op.out(mlr::name(x.data()),                                                  \
                  [a = x.data()](const Tensor& g, const Inputs&) -> Grads { return {derivative}; }); \
  }
#define MLR_UNARY_RULE_output(name, derivative)                                                          \
  Variable name(const Variable& x) {                                                                    \
    Op op(#name, {x});                                                                                  \
    Tensor out = mlr::name(x.data());                                                                   \
    return op.out(out, [out](const Tensor& g, const Inputs&) -> Grads { return {derivative}; });        \
  }
#define MLR_UNARY_RULE_nograd(name, derivative)
#define MLR_UNARY_RULE(name, kind, saves, derivative, ...) MLR_UNARY_RULE_##saves(name, derivative)
MLR_UNARY_OPS(MLR_UNARY_RULE)
#undef MLR_UNARY_RULE
#undef MLR_UNARY_RULE_none
#undef MLR_UNARY_RULE_input
#undef MLR_UNARY_RULE_output
#undef MLR_UNARY_RULE_nograd

// ---------------------------------------------------------------- with a scalar

Variable add(const Variable& a, double s) {
  Op op("add_scalar", {a});
  return op.out(mlr::add(a.data(), s), [](const Tensor& g, const Inputs&) -> Grads { return {g}; });
}

Variable sub(const Variable& a, double s) {
  Op op("sub_scalar", {a});
  return op.out(mlr::sub(a.data(), s), [](const Tensor& g, const Inputs&) -> Grads { return {g}; });
}

Variable sub(double s, const Variable& a) {
  Op op("rsub_scalar", {a});
  return op.out(mlr::add(mlr::neg(a.data()), s), [](const Tensor& g, const Inputs&) -> Grads { return {neg(g)}; });
}

Variable mul(const Variable& a, double s) {
  Op op("mul_scalar", {a});
  return op.out(mlr::mul(a.data(), s), [s](const Tensor& g, const Inputs&) -> Grads { return {g * s}; });
}

Variable div(const Variable& a, double s) {
  Op op("div_scalar", {a});
  return op.out(mlr::div(a.data(), s), [s](const Tensor& g, const Inputs&) -> Grads { return {g / s}; });
}

Variable div(double s, const Variable& a) {
  Op op("rdiv_scalar", {a});
  return op.out(mlr::mul(reciprocal(a.data()), s), [s, sa = a.data()](const Tensor& g, const Inputs&) -> Grads {
    return {g * (-s) / square(sa)};
  });
}

Variable pow(const Variable& a, double p) {
  Op op("pow_scalar", {a});
  return op.out(mlr::pow(a.data(), p), [p, sa = a.data()](const Tensor& g, const Inputs&) -> Grads {
    if (p == 0.0) return {zeros_like(g)};
    return {g * mlr::pow(sa, p - 1.0) * p};
  });
}

Variable clamp(const Variable& a, std::optional<double> min, std::optional<double> max) {
  Op op("clamp", {a});
  Tensor mask;
  if (op.need(0)) {
    if (min) mask = ge(a.data(), *min);
    if (max) mask = mask.defined() ? logical_and(mask, le(a.data(), *max)) : le(a.data(), *max);
  }
  return op.out(mlr::clamp(a.data(), min, max), [mask](const Tensor& g, const Inputs&) -> Grads {
    return {mask.defined() ? where(mask, g, 0.0) : g};
  });
}

// ---------------------------------------------------------------- selection

Variable where(const Tensor& cond, const Variable& a, const Variable& b) {
  Op op("where", {a, b});
  return op.out(mlr::where(cond, a.data(), b.data()), [cond](const Tensor& g, const Inputs& in) -> Grads {
    return {in.grad(0, [&] { return where(cond, g, 0.0); }), in.grad(1, [&] { return masked_fill(g, cond, 0.0); })};
  });
}

Variable masked_fill(const Variable& a, const Tensor& mask, double value) {
  Op op("masked_fill", {a});
  return op.out(mlr::masked_fill(a.data(), mask, value),
                [mask](const Tensor& g, const Inputs&) -> Grads { return {masked_fill(g, mask, 0.0)}; });
}

// ---------------------------------------------------------------- reductions

Variable sum(const Variable& a, const std::vector<int64_t>& dims, bool keepdim) {
  Op op("sum", {a});
  return op.out(mlr::sum(a.data(), dims, keepdim),
                [rd = reduced_dims(dims, a.dim(), "sum"), keepdim](const Tensor& g, const Inputs& in) -> Grads {
                  return {keepdim_grad(g, rd, keepdim).expand(in.shape(0))};
                });
}

Variable mean(const Variable& a, const std::vector<int64_t>& dims, bool keepdim) {
  Op op("mean", {a});
  std::vector<int64_t> rd = reduced_dims(dims, a.dim(), "mean");
  int64_t n = 1;
  for (int64_t d : rd) n *= a.size(d);
  return op.out(mlr::mean(a.data(), dims, keepdim), [rd, keepdim, n](const Tensor& g, const Inputs& in) -> Grads {
    return {keepdim_grad(g / static_cast<double>(n), rd, keepdim).expand(in.shape(0))};
  });
}

Variable amax(const Variable& a, const std::vector<int64_t>& dims, bool keepdim) {
  Op op("amax", {a});
  std::vector<int64_t> rd = reduced_dims(dims, a.dim(), "amax");
  Tensor out = mlr::amax(a.data(), dims, keepdim);
  Tensor mask = op.need(0) ? eq(a.data(), keepdim_grad(out, rd, keepdim)) : Tensor();
  return op.out(out, [mask, rd, keepdim](const Tensor& g, const Inputs&) -> Grads {
    Tensor m = cast(mask, g.dtype());
    return {m * (keepdim_grad(g, rd, keepdim) / mlr::sum(m, rd, true))};
  });
}

Variable logsumexp(const Variable& a, int64_t dim, bool keepdim) {
  Op op("logsumexp", {a});
  const int64_t d = wrap_dim(dim, a.dim(), "logsumexp");
  Tensor out = mlr::logsumexp(a.data(), d, keepdim);
  return op.out(out, [sa = a.data(), out, d, keepdim](const Tensor& g, const Inputs&) -> Grads {
    return {keepdim_grad(g, {d}, keepdim) * mlr::exp(sa - keepdim_grad(out, {d}, keepdim))};
  });
}

Variable softmax(const Variable& a, int64_t dim) {
  Op op("softmax", {a});
  Tensor out = mlr::softmax(a.data(), dim);
  return op.out(out, [out, dim](const Tensor& g, const Inputs&) -> Grads { return {softmax_backward(g, out, dim)}; });
}

Variable log_softmax(const Variable& a, int64_t dim) {
  Op op("log_softmax", {a});
  Tensor out = mlr::log_softmax(a.data(), dim);
  return op.out(out,
                [out, dim](const Tensor& g, const Inputs&) -> Grads { return {log_softmax_backward(g, out, dim)}; });
}

// ---------------------------------------------------------------- matrix products

Variable matmul(const Variable& a, const Variable& b) {
  Op op("matmul", {a, b});
  return op.out(mlr::matmul(a.data(), b.data()),
                [sa = keep(op.need(1), a.data()), sb = keep(op.need(0), b.data())](const Tensor& g,
                                                                                    const Inputs& in) -> Grads {
                  // 1-D operands were promoted (a [k] -> [1, k], b [k] -> [k, 1]) and the added
                  // dimension dropped from the output: put it back in g, then reduce.
                  const bool a1 = in.shape(0).size() == 1, b1 = in.shape(1).size() == 1;
                  Shape a2 = in.shape(0), b2 = in.shape(1);
                  if (a1) a2.insert(a2.begin(), 1);
                  if (b1) b2.push_back(1);
                  Tensor g2 = g;
                  if (b1) g2 = g2.unsqueeze(-1);
                  if (a1) g2 = g2.unsqueeze(-2);
                  Tensor da, db;
                  if (in.need(0)) {
                    Tensor bm = b1 ? sb.unsqueeze(-1) : sb;
                    da = matmul(g2, bm.transpose(-1, -2));
                    if (da.shape() != a2) da = sum_to(da, a2);
                    da = da.reshape(in.shape(0));
                  }
                  if (in.need(1)) {
                    Tensor am = a1 ? sa.unsqueeze(0) : sa;
                    if (b2.size() == 2) {  // b is shared by every batch: one GEMM over all rows
                      const int64_t k = am.size(-1), n = g2.size(-1);
                      db = matmul(am.reshape({-1, k}).t(), g2.reshape({-1, n}));
                    } else {
                      db = matmul(am.transpose(-1, -2), g2);
                      if (db.shape() != b2) db = sum_to(db, b2);
                    }
                    db = db.reshape(in.shape(1));
                  }
                  return {da, db};
                });
}

Variable linear(const Variable& x, const Variable& w, const Variable& bias) {
  Op op("linear", {x, w, bias});
  return op.out(mlr::linear(x.data(), w.data(), bias.data()),
                [sx = keep(op.need(1), x.data()), sw = keep(op.need(0), w.data())](const Tensor& g,
                                                                                    const Inputs& in) -> Grads {
                  const int64_t n_out = in.shape(1)[0], n_in = in.shape(1)[1];
                  return {in.grad(0, [&] { return matmul(g, sw); }),
                          in.grad(1, [&] { return matmul(g.reshape({-1, n_out}).t(), sx.reshape({-1, n_in})); }),
                          in.grad(2, [&] { return g; })};
                });
}

// ---------------------------------------------------------------- views and shape ops

Variable reshape(const Variable& a, Shape shape) {
  Op op("reshape", {a});
  return op.out(a.data().reshape(std::move(shape)),
                [](const Tensor& g, const Inputs& in) -> Grads { return {g.reshape(in.shape(0))}; });
}

Variable view(const Variable& a, Shape shape) {
  Op op("view", {a});
  return op.out(a.data().view(std::move(shape)),
                [](const Tensor& g, const Inputs& in) -> Grads { return {g.reshape(in.shape(0))}; });
}

Variable flatten(const Variable& a, int64_t start_dim, int64_t end_dim) {
  return reshape(a, a.data().flatten(start_dim, end_dim).shape());
}

Variable permute(const Variable& a, const std::vector<int64_t>& order) {
  Op op("permute", {a});
  Tensor out = a.data().permute(order);
  std::vector<int64_t> inverse(order.size());
  for (size_t i = 0; i < order.size(); ++i) inverse[wrap_dim(order[i], a.dim(), "permute")] = static_cast<int64_t>(i);
  return op.out(out, [inverse](const Tensor& g, const Inputs&) -> Grads { return {g.permute(inverse)}; });
}

Variable transpose(const Variable& a, int64_t d0, int64_t d1) {
  Op op("transpose", {a});
  return op.out(a.data().transpose(d0, d1),
                [d0, d1](const Tensor& g, const Inputs&) -> Grads { return {g.transpose(d0, d1)}; });
}

Variable narrow(const Variable& a, int64_t dim, int64_t start, int64_t length) {
  Op op("narrow", {a});
  return op.out(a.data().narrow(dim, start, length), [=](const Tensor& g, const Inputs& in) -> Grads {
    Tensor da = zeros(in.shape(0), g.options());
    da.narrow(dim, start, length).copy_(g);
    return {da};
  });
}

Variable slice(const Variable& a, int64_t dim, int64_t start, int64_t end, int64_t step) {
  Op op("slice", {a});
  return op.out(a.data().slice(dim, start, end, step), [=](const Tensor& g, const Inputs& in) -> Grads {
    Tensor da = zeros(in.shape(0), g.options());
    da.slice(dim, start, end, step).copy_(g);
    return {da};
  });
}

Variable select(const Variable& a, int64_t dim, int64_t index) {
  Op op("select", {a});
  return op.out(a.data().select(dim, index), [=](const Tensor& g, const Inputs& in) -> Grads {
    Tensor da = zeros(in.shape(0), g.options());
    da.select(dim, index).copy_(g);
    return {da};
  });
}

Variable expand(const Variable& a, Shape shape) {
  Op op("expand", {a});
  return op.out(a.data().expand(std::move(shape)),
                [](const Tensor& g, const Inputs& in) -> Grads { return {sum_to(g, in.shape(0))}; });
}

Variable squeeze(const Variable& a, int64_t dim) {
  Op op("squeeze", {a});
  return op.out(a.data().squeeze(dim),
                [](const Tensor& g, const Inputs& in) -> Grads { return {g.reshape(in.shape(0))}; });
}

Variable unsqueeze(const Variable& a, int64_t dim) {
  Op op("unsqueeze", {a});
  return op.out(a.data().unsqueeze(dim),
                [](const Tensor& g, const Inputs& in) -> Grads { return {g.reshape(in.shape(0))}; });
}

Variable contiguous(const Variable& a) {
  Op op("contiguous", {a});
  return op.out(a.data().contiguous(), [](const Tensor& g, const Inputs&) -> Grads { return {g}; });
}

Variable cast(const Variable& a, DType dtype) {
  if (!is_floating(dtype)) return Variable(mlr::cast(a.data(), dtype));  // not differentiable
  Op op("cast", {a});
  return op.out(mlr::cast(a.data(), dtype),
                [](const Tensor& g, const Inputs& in) -> Grads { return {mlr::cast(g, in.dtype(0))}; });
}

// ---------------------------------------------------------------- assembly and gathers

Variable cat(const std::vector<Variable>& inputs, int64_t dim) {
  MLR_CHECK(!inputs.empty(), "cat: no inputs");
  std::vector<Tensor> data;
  for (const Variable& v : inputs) data.push_back(v.data());
  Tensor out = mlr::cat(data, dim);
  const int64_t d = wrap_dim(dim, out.dim(), "cat");
  Op op("cat", inputs);
  return op.out(out, [d, n_inputs = inputs.size()](const Tensor& g, const Inputs& in) -> Grads {
    Grads grads;
    int64_t offset = 0;
    for (size_t i = 0; i < n_inputs; ++i) {
      const int64_t n = in.shape(i)[d];
      grads.push_back(in.grad(i, [&] { return g.narrow(d, offset, n); }));
      offset += n;
    }
    return grads;
  });
}

Variable stack(const std::vector<Variable>& inputs, int64_t dim) {
  MLR_CHECK(!inputs.empty(), "stack: no inputs");
  std::vector<Tensor> data;
  for (const Variable& v : inputs) data.push_back(v.data());
  Tensor out = mlr::stack(data, dim);
  const int64_t d = wrap_dim(dim, out.dim(), "stack");
  Op op("stack", inputs);
  return op.out(out, [d, n = inputs.size()](const Tensor& g, const Inputs& in) -> Grads {
    Grads grads;
    for (size_t i = 0; i < n; ++i)
      grads.push_back(in.grad(i, [&] { return g.select(d, static_cast<int64_t>(i)); }));
    return grads;
  });
}

namespace {
std::vector<Variable> split_outputs(const Variable& a, std::vector<Tensor> parts, int64_t dim) {
  const int64_t d = wrap_dim(dim, a.dim(), "split");
  Op op("split", {a});
  return op.outs(std::move(parts), [d](const std::vector<Tensor>& gs, const Inputs&) -> Grads {
    return {mlr::cat(gs, d)};
  });
}
}  // namespace

std::vector<Variable> split(const Variable& a, int64_t split_size, int64_t dim) {
  return split_outputs(a, mlr::split(a.data(), split_size, dim), dim);
}

std::vector<Variable> split(const Variable& a, const std::vector<int64_t>& sizes, int64_t dim) {
  return split_outputs(a, mlr::split(a.data(), sizes, dim), dim);
}

std::vector<Variable> chunk(const Variable& a, int64_t chunks, int64_t dim) {
  return split_outputs(a, mlr::chunk(a.data(), chunks, dim), dim);
}

Variable index_select(const Variable& a, int64_t dim, const Tensor& index) {
  Op op("index_select", {a});
  const int64_t d = wrap_dim(dim, a.dim(), "index_select");
  return op.out(mlr::index_select(a.data(), d, index), [d, index](const Tensor& g, const Inputs& in) -> Grads {
    return {index_add(zeros(in.shape(0), g.options()), d, index, g)};
  });
}

Variable embedding(const Variable& weight, const Tensor& ids) {
  Op op("embedding", {weight});
  return op.out(mlr::embedding(weight.data(), ids), [ids](const Tensor& g, const Inputs& in) -> Grads {
    return {embedding_backward(g, ids, in.shape(0)[0])};
  });
}

// ---------------------------------------------------------------- LLaMA ops (custom Functions)

namespace {

struct RmsNormFunction : Function<RmsNormFunction> {
  static constexpr const char* name = "rmsnorm";
  static Tensor forward(FunctionCtx& ctx, const Tensor& x, const Tensor& w, double eps) {
    RmsNormOutput r = rmsnorm_forward(x, w, eps);
    ctx.save_for_backward({x, w, r.rstd});
    return r.y;
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& s = ctx.saved_tensors();
    Tensor dw;
    Tensor dx = rmsnorm_backward(g[0], s[0], s[1], s[2], ctx.needs_input_grad(1) ? &dw : nullptr);
    return {dx, dw};
  }
};

struct RopeFunction : Function<RopeFunction> {
  static constexpr const char* name = "rope";
  static Tensor forward(FunctionCtx& ctx, const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
    ctx.save_for_backward({cos, sin});
    ctx.save("layout", layout);
    return rope_forward(x, cos, sin, layout);
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& s = ctx.saved_tensors();
    return {rope_backward(g[0], s[0], s[1], ctx.get<RopeLayout>("layout"))};
  }
};

struct SwigluFunction : Function<SwigluFunction> {
  static constexpr const char* name = "swiglu";
  static Tensor forward(FunctionCtx& ctx, const Tensor& gate, const Tensor& up) {
    ctx.save_for_backward({gate, up});
    return swiglu_forward(gate, up);
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& s = ctx.saved_tensors();
    Tensor dgate, dup;
    swiglu_backward(g[0], s[0], s[1], dgate, dup);
    return {dgate, dup};
  }
};

struct AttentionFunction : Function<AttentionFunction> {
  static constexpr const char* name = "attention";
  static Tensor forward(FunctionCtx& ctx, const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                        const Tensor& cu_seqlens) {
    AttentionOutput r = attention_forward(q, k, v, scale, cu_seqlens);
    ctx.save_for_backward({q, k, v, r.out, r.lse, cu_seqlens});
    ctx.save("scale", scale);
    return r.out;
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& s = ctx.saved_tensors();
    AttentionGrads d = attention_backward(g[0], s[0], s[1], s[2], s[3], s[4], ctx.get<double>("scale"), s[5]);
    return {d.dq, d.dk, d.dv};
  }
};

// Per-row losses; the reductions are composed on top.
struct CrossEntropyFunction : Function<CrossEntropyFunction> {
  static constexpr const char* name = "cross_entropy";
  static Tensor forward(FunctionCtx& ctx, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
    CrossEntropyOutput r = cross_entropy_forward(logits, targets, ignore_index);
    ctx.save_for_backward({logits, targets, r.lse});
    ctx.save("ignore_index", ignore_index);
    return r.losses;
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& s = ctx.saved_tensors();
    return {cross_entropy_backward(g[0], s[0], s[1], s[2], ctx.get<int64_t>("ignore_index"))};
  }
};

struct GatedLowrankFunction : Function<GatedLowrankFunction> {
  static constexpr const char* name = "gated_lowrank";
  static Tensor forward(FunctionCtx& ctx, const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s,
                        const Tensor& selected, double scale) {
    GatedLowrankOutput r = gated_lowrank_forward(x, a, b, s, selected, scale);
    ctx.save_for_backward({x, a, b, s, selected, r.h, r.g});
    ctx.save("scale", scale);
    return r.y;
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& v = ctx.saved_tensors();
    GatedLowrankGrads d = gated_lowrank_backward(g[0], v[0], v[1], v[2], v[3], v[4], v[5], v[6], ctx.get<double>("scale"));
    return {d.dx, d.da, d.db, d.ds};
  }
};

// x_r may be x itself (shared: then its gradient is summed into x's in place and the second
// input gets none).
struct RoutedLowrankFunction : Function<RoutedLowrankFunction> {
  static constexpr const char* name = "routed_lowrank";
  static Tensor forward(FunctionCtx& ctx, const Tensor& x, const Tensor& x_router, const Tensor& a, const Tensor& b,
                        const Tensor& w, const Tensor& s, const Tensor& selected, double scale, RouterScore score,
                        bool shared) {
    GatedLowrankOutput r = gated_lowrank_forward(x, a, b, s, selected, scale);
    ctx.save_for_backward({x, x_router, a, b, w, s, selected, r.h, r.g});
    ctx.save("scale", scale);
    ctx.save("score", score);
    ctx.save("shared", shared);
    return r.y;
  }
  static Grads backward(FunctionCtx& ctx, const Grads& g) {
    const Grads& v = ctx.saved_tensors();
    GatedLowrankGrads d = gated_lowrank_backward(g[0], v[0], v[2], v[3], v[5], v[6], v[7], v[8], ctx.get<double>("scale"));
    const bool shared = ctx.get<bool>("shared");
    RouterGrads rg = router_backward(d.ds, v[1], v[4], v[5], v[6], ctx.get<RouterScore>("score"),
                                     shared ? d.dx : Tensor());
    return {d.dx, shared ? Tensor() : rg.dx, d.da, d.db, rg.dw};
  }
};

}  // namespace

Variable rmsnorm(const Variable& x, const Variable& weight, double eps) {
  return RmsNormFunction::apply(x, weight, eps);
}

Variable rope(const Variable& x, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  return RopeFunction::apply(x, cos, sin, layout);
}

Variable swiglu(const Variable& gate, const Variable& up) { return SwigluFunction::apply(gate, up); }

Variable gated_lowrank(const Variable& x, const Variable& a, const Variable& b, const Variable& scores,
                       const Tensor& selected, double scale) {
  return GatedLowrankFunction::apply(x, a, b, scores, selected, scale);
}

Variable routed_lowrank(const Variable& x, const Variable& x_router, const Variable& a, const Variable& b,
                        const Variable& router, const Tensor& scores, const Tensor& selected, double scale,
                        RouterScore score) {
  return RoutedLowrankFunction::apply(x, x_router, a, b, router, scores, selected, scale, score, x.is_same(x_router));
}

Variable attention(const Variable& q, const Variable& k, const Variable& v, double scale, const Tensor& cu_seqlens) {
  return AttentionFunction::apply(q, k, v, scale, cu_seqlens);
}

Variable cross_entropy(const Variable& logits, const Tensor& targets, int64_t ignore_index, Reduction reduction) {
  Variable losses = CrossEntropyFunction::apply(logits, targets, ignore_index);
  switch (reduction) {
    case Reduction::none: return losses;
    case Reduction::sum: return sum(losses);
    case Reduction::mean: {
      // The count stays a device tensor (no host sync); at least 1 so an all-ignored batch gives 0.
      Tensor n = mlr::sum(cast(ne(targets, static_cast<double>(ignore_index)), losses.dtype()));
      return div(sum(losses), Variable(mlr::clamp(n, 1.0, std::nullopt)));
    }
  }
  throw Error("cross_entropy: unknown reduction");
}

}  // namespace mlr

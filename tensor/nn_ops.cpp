// Front-ends of the LLaMA hot-path ops (tensor/nn_ops.h): validate shapes, dtypes and devices,
// make inputs contiguous, allocate outputs and dispatch to the device kernels
// (tensor/kernels/<device>/<op>.*), which state the math.
//
// Saved statistics (rmsnorm's rstd, attention's and cross-entropy's lse, the per-row losses) are f32,
// or f64 for f64 inputs so that the f64 reference path keeps its precision end to end.
#include "tensor/nn_ops.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "tensor/dispatch.h"
#include "tensor/ops.h"

namespace mlr {

namespace {

// -1: not read from the environment yet.
std::atomic<int> debug_checks_state{-1};

}  // namespace

bool debug_checks() {
  int state = debug_checks_state.load(std::memory_order_relaxed);
  if (state < 0) {
    const char* env = std::getenv("MLR_DEBUG_CHECKS");
    state = env && *env && std::strcmp(env, "0") != 0 ? 1 : 0;
    debug_checks_state.store(state, std::memory_order_relaxed);
  }
  return state == 1;
}

void set_debug_checks(bool on) { debug_checks_state.store(on ? 1 : 0, std::memory_order_relaxed); }

namespace {

DType stat_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

using Named = std::pair<const char*, const Tensor*>;

// Every tensor defined and on the device of the first one.
void check_defined_same_device(const char* op, std::initializer_list<Named> tensors) {
  const Tensor* first = nullptr;
  for (const auto& [name, t] : tensors) {
    MLR_CHECK(t->defined(), "{}: {} is undefined", op, name);
    if (!first) first = t;
    MLR_CHECK(t->device() == first->device(), "{}: {} is on {} but {} is on {}", op, name, t->device().str(),
              tensors.begin()->first, first->device().str());
  }
}

// Every tensor has the floating dtype of the first one.
void check_same_floating_dtype(const char* op, std::initializer_list<Named> tensors) {
  const auto& [first_name, first] = *tensors.begin();
  MLR_CHECK(first->is_floating_point(), "{}: {} has dtype {} (expected f32, f64, bf16 or f16)", op, first_name,
            first->dtype());
  for (const auto& [name, t] : tensors)
    MLR_CHECK(t->dtype() == first->dtype(), "{}: {} has dtype {} but {} has dtype {}", op, name, t->dtype(),
              first_name, first->dtype());
}

void check_shape(const char* op, const char* name, const Tensor& t, const Shape& expected) {
  MLR_CHECK(t.shape() == expected, "{}: {} has shape {}, expected {}", op, name, shape_str(t.shape()),
            shape_str(expected));
}

void check_stat(const char* op, const char* name, const Tensor& t, const Shape& expected, DType dtype) {
  check_shape(op, name, t, expected);
  MLR_CHECK(t.dtype() == dtype, "{}: {} has dtype {}, expected {}", op, name, t.dtype(), dtype);
}

Shape without_last(const Shape& s) { return Shape(s.begin(), s.end() - 1); }

// ---- rope ----
void check_rope(const char* op, const Tensor& x, const Tensor& cos, const Tensor& sin) {
  check_defined_same_device(op, {{"x", &x}, {"cos", &cos}, {"sin", &sin}});
  MLR_CHECK(x.dim() == 4, "{}: x must be [batch, seq, heads, head_dim], got {}", op, shape_str(x.shape()));
  MLR_CHECK(x.is_floating_point(), "{}: x has dtype {} (expected a floating dtype)", op, x.dtype());
  const int64_t batch = x.size(0), seq = x.size(1), d = x.size(3);
  MLR_CHECK(d % 2 == 0, "{}: head_dim {} is odd (x {})", op, d, shape_str(x.shape()));
  MLR_CHECK(cos.shape() == sin.shape(), "{}: cos {} and sin {} differ in shape", op, shape_str(cos.shape()),
            shape_str(sin.shape()));
  const bool shared = cos.shape() == Shape({seq, d / 2}), per_batch = cos.shape() == Shape({batch, seq, d / 2});
  MLR_CHECK(shared || per_batch, "{}: cos/sin have shape {}, expected [{}, {}] or [{}, {}, {}] for x {}", op,
            shape_str(cos.shape()), seq, d / 2, batch, seq, d / 2, shape_str(x.shape()));
  MLR_CHECK((cos.dtype() == DType::f32 || cos.dtype() == DType::f64) && sin.dtype() == cos.dtype(),
            "{}: cos/sin have dtypes {}/{}, expected f32 (or f64)", op, cos.dtype(), sin.dtype());
}

// ---- attention ----
void check_cu_seqlens(const char* op, const Tensor& cu, int64_t batch, int64_t seq) {
  if (!cu.defined()) return;
  MLR_CHECK(cu.dtype() == DType::i32 || cu.dtype() == DType::i64, "{}: cu_seqlens has dtype {}, expected i32", op,
            cu.dtype());
  MLR_CHECK(cu.dim() == 1 && cu.size(0) >= 2, "{}: cu_seqlens must be 1-d [0, l1, l1+l2, ..., seq], got shape {}",
            op, shape_str(cu.shape()));
  MLR_CHECK(batch == 1, "{}: cu_seqlens needs packed input with batch 1, got batch {}", op, batch);
  if (!check_values_of(cu)) return;  // checked where the batch was built (nn_ops.h)
  const std::vector<int64_t> v = cu.to_vector<int64_t>();
  MLR_CHECK(v.front() == 0, "{}: cu_seqlens [{}] must start at 0", op, fmt::join(v, ", "));
  for (size_t i = 1; i < v.size(); ++i)
    MLR_CHECK(v[i] >= v[i - 1], "{}: cu_seqlens [{}] decreases at entry {} ({} after {})", op, fmt::join(v, ", "), i,
              v[i], v[i - 1]);
  MLR_CHECK(v.back() == seq, "{}: cu_seqlens [{}] must end at the sequence length {}", op, fmt::join(v, ", "), seq);
}

void check_attention_inputs(const char* op, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& cu) {
  check_defined_same_device(op, {{"q", &q}, {"k", &k}, {"v", &v}});
  check_same_floating_dtype(op, {{"q", &q}, {"k", &k}, {"v", &v}});
  MLR_CHECK(q.dim() == 4 && k.dim() == 4, "{}: q {} and k {} must be [batch, seq, heads, head_dim]", op,
            shape_str(q.shape()), shape_str(k.shape()));
  MLR_CHECK(k.shape() == v.shape(), "{}: k {} and v {} differ in shape", op, shape_str(k.shape()),
            shape_str(v.shape()));
  MLR_CHECK(k.size(0) == q.size(0) && k.size(1) == q.size(1) && k.size(3) == q.size(3),
            "{}: k {} does not match q {} in batch, seq or head_dim", op, shape_str(k.shape()), shape_str(q.shape()));
  MLR_CHECK(k.size(2) > 0 && q.size(2) % k.size(2) == 0, "{}: {} query heads are not a multiple of {} kv heads", op,
            q.size(2), k.size(2));
  if (cu.defined()) MLR_CHECK(cu.device() == q.device(), "{}: cu_seqlens on {} but q on {}", op, cu.device().str(),
                              q.device().str());
  check_cu_seqlens(op, cu, q.size(0), q.size(1));
}

// ---- cross-entropy ----
void check_targets(const char* op, const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  check_defined_same_device(op, {{"logits", &logits}, {"targets", &targets}});
  MLR_CHECK(logits.dim() == 2, "{}: logits must be [N, V], got {}", op, shape_str(logits.shape()));
  MLR_CHECK(logits.is_floating_point(), "{}: logits have dtype {} (expected a floating dtype)", op, logits.dtype());
  MLR_CHECK(targets.dtype() == DType::i32 || targets.dtype() == DType::i64, "{}: targets have dtype {}, expected i64 or i32",
            op, targets.dtype());
  check_shape(op, "targets", targets, {logits.size(0)});
  if (!check_values_of(targets)) return;  // checked where the batch was built (nn_ops.h)
  const int64_t vocab = logits.size(1);
  const std::vector<int64_t> t = targets.to_vector<int64_t>();
  for (size_t i = 0; i < t.size(); ++i)
    MLR_CHECK(t[i] == ignore_index || (t[i] >= 0 && t[i] < vocab),
              "{}: target {} at row {} is out of range for {} classes (ignore_index {})", op, t[i], i, vocab,
              ignore_index);
}

}  // namespace

// ------------------------------------------------------------------ rmsnorm

RmsNormOutput rmsnorm_forward(const Tensor& x_in, const Tensor& weight, double eps) {
  const char* op = "rmsnorm_forward";
  check_defined_same_device(op, {{"x", &x_in}, {"weight", &weight}});
  check_same_floating_dtype(op, {{"x", &x_in}, {"weight", &weight}});
  MLR_CHECK(x_in.dim() >= 1, "{}: x must have at least one dimension", op);
  check_shape(op, "weight", weight, {x_in.size(-1)});
  MLR_CHECK(eps >= 0, "{}: eps {} is negative", op, eps);
  Tensor x = x_in.contiguous();
  RmsNormOutput r{empty_like(x), empty(without_last(x.shape()), {stat_dtype(x.dtype()), x.device()})};
  if (x.numel() > 0) MLR_DISPATCH(x.device(), rmsnorm_forward, x, weight.contiguous(), eps, r.y, r.rstd);
  return r;
}

Tensor rmsnorm_backward(const Tensor& dy_in, const Tensor& x_in, const Tensor& weight, const Tensor& rstd_in,
                        Tensor* dweight) {
  const char* op = "rmsnorm_backward";
  check_defined_same_device(op, {{"dy", &dy_in}, {"x", &x_in}, {"weight", &weight}, {"rstd", &rstd_in}});
  check_same_floating_dtype(op, {{"x", &x_in}, {"dy", &dy_in}, {"weight", &weight}});
  MLR_CHECK(x_in.dim() >= 1, "{}: x must have at least one dimension", op);
  check_shape(op, "dy", dy_in, x_in.shape());
  check_shape(op, "weight", weight, {x_in.size(-1)});
  check_stat(op, "rstd", rstd_in, without_last(x_in.shape()), stat_dtype(x_in.dtype()));
  Tensor x = x_in.contiguous(), dy = dy_in.contiguous(), rstd = rstd_in.contiguous();
  Tensor dx = empty_like(x);
  if (dweight) *dweight = empty(weight.shape(), weight.options());
  if (x.numel() > 0) {
    MLR_DISPATCH(x.device(), rmsnorm_backward, dy, x, weight.contiguous(), rstd, dx, dweight);
  } else if (dweight) {
    dweight->zero_();
  }
  return dx;
}

// ------------------------------------------------------------------ rope

Tensor rope_forward(const Tensor& x, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  check_rope("rope_forward", x, cos, sin);
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  if (y.numel() > 0) MLR_DISPATCH(x.device(), rope_forward, y, xc, cos.contiguous(), sin.contiguous(), layout);
  return y;
}

Tensor rope_backward(const Tensor& dy, const Tensor& cos, const Tensor& sin, RopeLayout layout) {
  check_rope("rope_backward", dy, cos, sin);
  Tensor dyc = dy.contiguous();
  Tensor dx = empty_like(dyc);
  if (dx.numel() > 0) MLR_DISPATCH(dy.device(), rope_backward, dx, dyc, cos.contiguous(), sin.contiguous(), layout);
  return dx;
}

void rope_tables(const Tensor& positions, const Tensor& inv_freq, Tensor& cos, Tensor& sin) {
  const char* op = "rope_tables";
  check_defined_same_device(op, {{"positions", &positions}, {"inv_freq", &inv_freq}});
  MLR_CHECK(positions.dtype() == DType::i32 || positions.dtype() == DType::i64,
            "{}: positions have dtype {}, expected i32 or i64", op, positions.dtype());
  MLR_CHECK(inv_freq.dim() == 1 && inv_freq.dtype() == DType::f32, "{}: inv_freq must be 1-d f32, got {} {}", op,
            shape_str(inv_freq.shape()), inv_freq.dtype());
  Shape shape = positions.shape();
  shape.push_back(inv_freq.size(0));
  cos = empty(shape, {DType::f32, positions.device()});
  sin = empty(shape, {DType::f32, positions.device()});
  if (cos.numel() > 0)
    MLR_DISPATCH(positions.device(), rope_tables, positions.contiguous(), inv_freq.contiguous(), cos, sin);
}

// ------------------------------------------------------------------ swiglu

Tensor swiglu_forward(const Tensor& gate, const Tensor& up) {
  const char* op = "swiglu_forward";
  check_defined_same_device(op, {{"gate", &gate}, {"up", &up}});
  check_same_floating_dtype(op, {{"gate", &gate}, {"up", &up}});
  check_shape(op, "up", up, gate.shape());
  Tensor g = gate.contiguous();
  Tensor h = empty_like(g);
  if (h.numel() > 0) MLR_DISPATCH(g.device(), swiglu_forward, h, g, up.contiguous());
  return h;
}

void swiglu_backward(const Tensor& dh, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) {
  const char* op = "swiglu_backward";
  check_defined_same_device(op, {{"dh", &dh}, {"gate", &gate}, {"up", &up}});
  check_same_floating_dtype(op, {{"gate", &gate}, {"up", &up}, {"dh", &dh}});
  check_shape(op, "up", up, gate.shape());
  check_shape(op, "dh", dh, gate.shape());
  dgate = empty(gate.shape(), gate.options());
  dup = empty(gate.shape(), gate.options());
  if (gate.numel() > 0)
    MLR_DISPATCH(gate.device(), swiglu_backward, dh.contiguous(), gate.contiguous(), up.contiguous(), dgate, dup);
}

// ------------------------------------------------------------------ gated low-rank (SMoRA)

namespace {

void check_gated_lowrank(const char* op, const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s,
                         const Tensor& selected) {
  check_defined_same_device(op, {{"x", &x}, {"A", &a}, {"B", &b}, {"scores", &s}, {"selected", &selected}});
  check_same_floating_dtype(op, {{"x", &x}, {"A", &a}, {"B", &b}, {"scores", &s}});
  MLR_CHECK(x.dim() == 2 && a.dim() == 2 && b.dim() == 2, "{}: expects x [T, in], A [r, in], B [out, r]; got {}, {}, {}",
            op, shape_str(x.shape()), shape_str(a.shape()), shape_str(b.shape()));
  const int64_t tokens = x.size(0), r = a.size(0);
  MLR_CHECK(a.size(1) == x.size(1), "{}: A {} does not take x {}", op, shape_str(a.shape()), shape_str(x.shape()));
  check_shape(op, "B", b, {b.size(0), r});
  check_shape(op, "scores", s, {tokens, r});
  check_shape(op, "selected", selected, {tokens, r});
  MLR_CHECK(selected.dtype() == DType::boolean, "{}: selected has dtype {}, expected bool", op, selected.dtype());
}

// The sparse kernel where there is one (the CPU); the dense products elsewhere.
bool sparse_gated_lowrank(const Tensor& x) { return x.device().is_cpu(); }

}  // namespace

GatedLowrankOutput gated_lowrank_forward(const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s,
                                         const Tensor& selected, double scale) {
  const char* op = "gated_lowrank_forward";
  check_gated_lowrank(op, x, a, b, s, selected);
  const int64_t tokens = x.size(0), r = a.size(0), out = b.size(0);
  GatedLowrankOutput o;
  if (sparse_gated_lowrank(x)) {
    o.y = empty({tokens, out}, x.options());
    o.h = empty({tokens, r}, x.options());
    o.g = empty({tokens, r}, x.options());
    if (tokens > 0)
      cpu::gated_lowrank_forward(o.y, o.h, o.g, x.contiguous(), a.contiguous(), b.contiguous(), s.contiguous(),
                                 selected.contiguous(), scale);
    return o;
  }
  const Tensor m = cast(selected, x.dtype());
  const Tensor kept = mul(s, m);
  o.g = mul(div(kept, sum(kept, {-1}, true)), scale);
  o.h = mul(linear(x, a), m);
  o.y = linear(mul(o.g, o.h), b);
  return o;
}

GatedLowrankGrads gated_lowrank_backward(const Tensor& dy, const Tensor& x, const Tensor& a, const Tensor& b,
                                         const Tensor& s, const Tensor& selected, const Tensor& h, const Tensor& g,
                                         double scale) {
  const char* op = "gated_lowrank_backward";
  check_gated_lowrank(op, x, a, b, s, selected);
  const int64_t tokens = x.size(0), r = a.size(0), out = b.size(0);
  check_shape(op, "dy", dy, {tokens, out});
  check_shape(op, "h", h, {tokens, r});
  check_shape(op, "g", g, {tokens, r});
  check_same_floating_dtype(op, {{"x", &x}, {"dy", &dy}, {"h", &h}, {"g", &g}});
  GatedLowrankGrads d;
  if (sparse_gated_lowrank(x)) {
    d.dx = empty(x.shape(), x.options());
    d.da = empty(a.shape(), a.options());
    d.db = empty(b.shape(), b.options());
    d.ds = empty(s.shape(), s.options());
    if (tokens == 0) {
      d.da.fill_(0.0);
      d.db.fill_(0.0);
      return d;
    }
    cpu::gated_lowrank_backward(d.dx, d.da, d.db, d.ds, dy.contiguous(), x.contiguous(), a.contiguous(),
                                b.contiguous(), s.contiguous(), selected.contiguous(), h.contiguous(), g.contiguous(),
                                scale);
    return d;
  }
  const Tensor m = cast(selected, x.dtype());
  const Tensor u = matmul(dy, b);
  const Tensor gu = mul(g, u);
  d.dx = matmul(gu, a);
  d.da = matmul(gu.t(), x);
  d.db = matmul(dy.t(), mul(g, h));
  const Tensor dg = mul(u, h);
  const Tensor z = sum(mul(s, m), {-1}, true);
  const Tensor centred = sub(dg, div(sum(mul(dg, g), {-1}, true), scale));
  d.ds = mul(mul(div(centred, z), scale), m);
  return d;
}

RouterGrads router_backward(const Tensor& ds, const Tensor& x, const Tensor& w, const Tensor& s,
                            const Tensor& selected, RouterScore score, const Tensor& dx_into) {
  const char* op = "router_backward";
  check_defined_same_device(op, {{"ds", &ds}, {"x", &x}, {"W", &w}, {"scores", &s}, {"selected", &selected}});
  check_same_floating_dtype(op, {{"x", &x}, {"W", &w}, {"scores", &s}, {"ds", &ds}});
  MLR_CHECK(x.dim() == 2 && w.dim() == 2 && w.size(1) == x.size(1),
            "{}: expects x [T, in] and W [r, in]; got {} and {}", op, shape_str(x.shape()), shape_str(w.shape()));
  const Shape scores_shape{x.size(0), w.size(0)};
  check_shape(op, "scores", s, scores_shape);
  check_shape(op, "ds", ds, scores_shape);
  check_shape(op, "selected", selected, scores_shape);
  MLR_CHECK(selected.dtype() == DType::boolean, "{}: selected has dtype {}, expected bool", op, selected.dtype());
  if (dx_into.defined()) {
    check_shape(op, "dx_into", dx_into, x.shape());
    MLR_CHECK(dx_into.dtype() == x.dtype() && dx_into.is_contiguous() && dx_into.device() == x.device(),
              "{}: dx_into must be a contiguous {} tensor on {}", op, x.dtype(), x.device().str());
  }
  RouterGrads d;
  if (score == RouterScore::sigmoid && x.device().is_cpu()) {
    d.dx = dx_into.defined() ? dx_into : empty(x.shape(), x.options());
    d.dw = empty(w.shape(), w.options());
    if (x.size(0) == 0) {
      if (!dx_into.defined()) d.dx.fill_(0.0);
      d.dw.fill_(0.0);
      return d;
    }
    cpu::sigmoid_router_backward(d.dx, d.dw, ds.contiguous(), x.contiguous(), w.contiguous(), s.contiguous(),
                                 selected.contiguous(), dx_into.defined());
    return d;
  }
  const Tensor dlogits = score == RouterScore::sigmoid ? mul(mul(ds, s), add(neg(s), 1.0))
                                                       : mul(s, sub(ds, sum(mul(ds, s), {-1}, true)));
  d.dw = matmul(dlogits.t(), x);
  d.dx = matmul(dlogits, w);
  if (dx_into.defined()) {
    Tensor into = dx_into;
    add_(into, d.dx);
    d.dx = into;
  }
  return d;
}

// ------------------------------------------------------------------ attention

AttentionOutput attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                                  const Tensor& cu_seqlens) {
  check_attention_inputs("attention_forward", q, k, v, cu_seqlens);
  AttentionOutput r{empty(q.shape(), q.options()),
                    empty({q.size(0), q.size(2), q.size(1)}, {stat_dtype(q.dtype()), q.device()})};
  if (q.numel() > 0)
    MLR_DISPATCH(q.device(), attention_forward, q.contiguous(), k.contiguous(), v.contiguous(), scale, cu_seqlens,
                 r.out, r.lse);
  return r;
}

AttentionGrads attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, double scale, const Tensor& cu_seqlens) {
  const char* op = "attention_backward";
  check_attention_inputs(op, q, k, v, cu_seqlens);
  check_defined_same_device(op, {{"q", &q}, {"dout", &dout}, {"out", &out}, {"lse", &lse}});
  check_same_floating_dtype(op, {{"q", &q}, {"dout", &dout}, {"out", &out}});
  check_shape(op, "dout", dout, q.shape());
  check_shape(op, "out", out, q.shape());
  check_stat(op, "lse", lse, {q.size(0), q.size(2), q.size(1)}, stat_dtype(q.dtype()));
  AttentionGrads g{empty(q.shape(), q.options()), empty(k.shape(), k.options()), empty(v.shape(), v.options())};
  if (q.numel() > 0)
    MLR_DISPATCH(q.device(), attention_backward, dout.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
                 out.contiguous(), lse.contiguous(), scale, cu_seqlens, g.dq, g.dk, g.dv);
  return g;
}

// ------------------------------------------------------------------ cross-entropy

CrossEntropyOutput cross_entropy_forward(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  const char* op = "cross_entropy_forward";
  check_targets(op, logits, targets, ignore_index);
  MLR_CHECK(logits.size(1) > 0, "{}: logits {} have no classes", op, shape_str(logits.shape()));
  const TensorOptions stats{stat_dtype(logits.dtype()), logits.device()};
  CrossEntropyOutput r{empty({logits.size(0)}, stats), empty({logits.size(0)}, stats)};
  if (logits.size(0) > 0)
    MLR_DISPATCH(logits.device(), cross_entropy_forward, logits.contiguous(), targets.contiguous(), ignore_index,
                 r.losses, r.lse);
  return r;
}

Tensor cross_entropy_backward(const Tensor& dlosses, const Tensor& logits, const Tensor& targets, const Tensor& lse,
                              int64_t ignore_index) {
  const char* op = "cross_entropy_backward";
  check_targets(op, logits, targets, ignore_index);
  check_defined_same_device(op, {{"logits", &logits}, {"dlosses", &dlosses}, {"lse", &lse}});
  MLR_CHECK(dlosses.is_floating_point(), "{}: dlosses have dtype {} (expected a floating dtype)", op, dlosses.dtype());
  check_shape(op, "dlosses", dlosses, {logits.size(0)});
  const DType stats = stat_dtype(logits.dtype());
  check_stat(op, "lse", lse, {logits.size(0)}, stats);
  Tensor dlogits = empty(logits.shape(), logits.options());
  if (dlogits.numel() > 0)
    MLR_DISPATCH(logits.device(), cross_entropy_backward, dlogits, dlosses.to(stats).contiguous(),
                 logits.contiguous(), targets.contiguous(), lse.contiguous(), ignore_index);
  return dlogits;
}

}  // namespace mlr

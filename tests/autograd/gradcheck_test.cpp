// Every differentiable op against finite differences in float64.
//
// The registry below holds one or more cases per op (by its name in differentiable_ops()):
// random inputs from a fresh seed per case, small odd shapes, broadcasting where the op
// broadcasts. The unary and binary ops of the op table (tensor/op_table.h) get their cases from
// their rows (inputs from the row's domain), so a differentiable op added there is checked here
// without a line of this file. The harness runs each case twice: on contiguous inputs and on non-contiguous views
// of the same values (every other element of a wider buffer). It also checks that the case's
// graph really contains the op's node, and a test fails when an op has no case.
#include <doctest/doctest.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <unordered_set>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "tensor/op_table.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

using Inputs = std::vector<Variable>;

struct Case {
  std::string op;
  std::string what;  // a short description of the variant
  // Builds the inputs (leaves that require grad are checked) from a generator.
  std::function<Inputs(Generator&)> inputs;
  std::function<std::vector<Variable>(const Inputs&)> fn;
  double eps = 1e-6, atol = 1e-5, rtol = 1e-3;
};

// ---- input builders (f64, CPU) ----
Variable normal(Generator& g, Shape s) { return Variable::leaf(randn(s, g, DType::f64)); }
Variable uniform(Generator& g, Shape s, double lo, double hi) {
  Tensor t = empty(s, DType::f64);
  uniform_(t, lo, hi, g);
  return Variable::leaf(t);
}
Variable positive(Generator& g, Shape s) { return uniform(g, s, 0.5, 2.0); }
// |x| in [0.2, 1.5] with a random sign: away from the kinks of abs, relu, ...
Variable away_from_zero(Generator& g, Shape s) {
  Tensor mag = empty(s, DType::f64);
  uniform_(mag, 0.2, 1.5, g);
  Tensor sign = where(gt(rand(s, g, DType::f64), 0.5), ones(s, DType::f64), full(s, -1.0, DType::f64));
  return Variable::leaf(mul(mag, sign));
}
Variable constant(Tensor t) { return Variable(std::move(t)); }
Tensor ids(const std::vector<int64_t>& v, Shape s) { return from_vector(v, s); }
Tensor bools(Generator& g, Shape s) { return gt(rand(s, g), 0.5); }
// A leaf from an op table domain (tensor/op_table.h).
Variable from_domain(Generator& g, InputDomain domain, Shape s) {
  switch (domain) {
    case InputDomain::normal: return normal(g, s);
    case InputDomain::positive: return positive(g, s);
    case InputDomain::nonzero: return away_from_zero(g, s);
    case InputDomain::specials: break;
  }
  throw Error("gradcheck: the 'specials' domain (NaN, inf) has no finite differences; give the op another domain");
}

std::vector<Variable> one(Variable v) { return {std::move(v)}; }

std::vector<Case> build_registry() {
  std::vector<Case> r;
  auto add = [&](std::string op, std::string what, std::function<Inputs(Generator&)> in,
                 std::function<std::vector<Variable>(const Inputs&)> fn) {
    r.push_back({std::move(op), std::move(what), std::move(in), std::move(fn)});
    return &r.back();
  };
  using G = Generator&;
  using I = const Inputs&;

  // binary ops of the table: same shape, both broadcast, and one operand constant (so each rule
  // is also run saving only what one input's gradient needs)
  auto binary = [&](std::string op, BinaryOp code, std::function<Variable(const Variable&, const Variable&)> f) {
    const BinaryOpInfo info = op_info(code);
    const InputDomain da = info.a_inputs, db = info.b_inputs;
    auto run = [f](I x) { return one(f(x[0], x[1])); };
    add(op, "same shape", [=](G g) { return Inputs{from_domain(g, da, {3, 5}), from_domain(g, db, {3, 5})}; }, run);
    add(op, "broadcast [4,1,3] op [5,3]",
        [=](G g) { return Inputs{from_domain(g, da, {4, 1, 3}), from_domain(g, db, {5, 3})}; }, run);
    add(op, "broadcast [2,1,4] op [3,1], b constant",
        [=](G g) { return Inputs{from_domain(g, da, {2, 1, 4}), constant(from_domain(g, db, {3, 1}).data())}; }, run);
    add(op, "broadcast [2,3] op [3], a constant",
        [=](G g) { return Inputs{constant(from_domain(g, da, {2, 3}).data()), from_domain(g, db, {3})}; }, run);
  };
#define MLR_GRADCHECK_BINARY_rule(name) \
  binary(#name, BinaryOp::name, [](const Variable& a, const Variable& b) { return mlr::name(a, b); });
#define MLR_GRADCHECK_BINARY_nograd(name)
#define MLR_GRADCHECK_BINARY(name, kind, scalar_form, grad, ...) MLR_GRADCHECK_BINARY_##grad(name)
  MLR_BINARY_OPS(MLR_GRADCHECK_BINARY)
#undef MLR_GRADCHECK_BINARY
#undef MLR_GRADCHECK_BINARY_rule
#undef MLR_GRADCHECK_BINARY_nograd

  // unary ops of the table
  auto unary = [&](std::string op, UnaryOp code, std::function<Variable(const Variable&)> f) {
    const InputDomain domain = op_info(code).inputs;
    add(op, "", [domain](G g) { return Inputs{from_domain(g, domain, {3, 5})}; }, [f](I x) { return one(f(x[0])); });
  };
#define MLR_GRADCHECK_UNARY_CASE(name) \
  unary(#name, UnaryOp::name, [](const Variable& a) { return mlr::name(a); });
#define MLR_GRADCHECK_UNARY_none(name) MLR_GRADCHECK_UNARY_CASE(name)
#define MLR_GRADCHECK_UNARY_input(name) MLR_GRADCHECK_UNARY_CASE(name)
#define MLR_GRADCHECK_UNARY_output(name) MLR_GRADCHECK_UNARY_CASE(name)
#define MLR_GRADCHECK_UNARY_nograd(name)
#define MLR_GRADCHECK_UNARY(name, kind, saves, ...) MLR_GRADCHECK_UNARY_##saves(name)
  MLR_UNARY_OPS(MLR_GRADCHECK_UNARY)
#undef MLR_GRADCHECK_UNARY
#undef MLR_GRADCHECK_UNARY_CASE
#undef MLR_GRADCHECK_UNARY_none
#undef MLR_GRADCHECK_UNARY_input
#undef MLR_GRADCHECK_UNARY_output
#undef MLR_GRADCHECK_UNARY_nograd

  // with a scalar
  add("add_scalar", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(x[0] + 1.5); });
  add("sub_scalar", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(x[0] - 1.5); });
  add("rsub_scalar", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(1.5 - x[0]); });
  add("mul_scalar", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(x[0] * -2.5); });
  add("div_scalar", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(x[0] / 3.0); });
  add("rdiv_scalar", "", [](G g) { return Inputs{away_from_zero(g, {3, 4})}; },
      [](I x) { return one(2.0 / x[0]); });
  add("pow_scalar", "fractional exponent", [](G g) { return Inputs{positive(g, {3, 4})}; },
      [](I x) { return one(pow(x[0], 2.5)); });
  add("pow_scalar", "integer exponent, signed base", [](G g) { return Inputs{normal(g, {5})}; },
      [](I x) { return one(pow(x[0], 3.0)); });

  // Values in [-1.5, 1.5] against bounds +-0.5: an element within eps of a bound is improbable.
  add("clamp", "both bounds", [](G g) { return Inputs{uniform(g, {4, 5}, -1.5, 1.5)}; },
      [](I x) { return one(clamp(x[0], -0.5, 0.5)); });
  add("clamp", "min only", [](G g) { return Inputs{uniform(g, {4, 5}, -1.5, 1.5)}; },
      [](I x) { return one(clamp(x[0], 0.25, std::nullopt)); });

  // selection
  add("where", "broadcast b [4]", [](G g) { return Inputs{constant(bools(g, {3, 4})), normal(g, {3, 4}), normal(g, {4})}; },
      [](I x) { return one(where(x[0].data(), x[1], x[2])); });
  add("masked_fill", "mask [5] broadcast to [3,5]", [](G g) { return Inputs{normal(g, {3, 5}), constant(bools(g, {5}))}; },
      [](I x) { return one(masked_fill(x[0], x[1].data(), 7.0)); });

  // reductions
  add("sum", "dim 1", [](G g) { return Inputs{normal(g, {3, 4, 5})}; }, [](I x) { return one(sum(x[0], {1})); });
  add("sum", "all", [](G g) { return Inputs{normal(g, {3, 5})}; }, [](I x) { return one(sum(x[0])); });
  add("sum", "dims {0,2} keepdim", [](G g) { return Inputs{normal(g, {3, 4, 5})}; },
      [](I x) { return one(sum(x[0], {0, -1}, true)); });
  add("mean", "dim -1", [](G g) { return Inputs{normal(g, {3, 5})}; }, [](I x) { return one(mean(x[0], {-1})); });
  add("mean", "all keepdim", [](G g) { return Inputs{normal(g, {3, 5})}; },
      [](I x) { return one(mean(x[0], {}, true)); });
  add("amax", "dim 1", [](G g) { return Inputs{normal(g, {3, 5})}; }, [](I x) { return one(amax(x[0], {1})); });
  // Two-way ties: the central difference of max at a tie is 1/2, the even split autograd uses.
  add("amax", "two-way ties, keepdim",
      [](G g) {
        return Inputs{Variable::leaf(from_vector<double>({1, 3, 3, -2, 0.5, 0.5, 2, -1, 4}, {3, 3}))};
      },
      [](I x) { return one(amax(x[0], {1}, true)); });
  add("logsumexp", "dim 1", [](G g) { return Inputs{normal(g, {3, 5})}; },
      [](I x) { return one(logsumexp(x[0], 1)); });
  add("logsumexp", "dim 0 keepdim", [](G g) { return Inputs{normal(g, {3, 5})}; },
      [](I x) { return one(logsumexp(x[0], 0, true)); });
  add("softmax", "last dim", [](G g) { return Inputs{normal(g, {3, 5})}; }, [](I x) { return one(softmax(x[0], -1)); });
  add("softmax", "dim 0", [](G g) { return Inputs{normal(g, {3, 5})}; }, [](I x) { return one(softmax(x[0], 0)); });
  add("log_softmax", "last dim", [](G g) { return Inputs{normal(g, {3, 5})}; },
      [](I x) { return one(log_softmax(x[0], -1)); });

  // matrix products
  add("matmul", "2-d", [](G g) { return Inputs{normal(g, {3, 4}), normal(g, {4, 5})}; },
      [](I x) { return one(matmul(x[0], x[1])); });
  add("matmul", "batched [2,3,4] @ [4,5]", [](G g) { return Inputs{normal(g, {2, 3, 4}), normal(g, {4, 5})}; },
      [](I x) { return one(matmul(x[0], x[1])); });
  add("matmul", "broadcast batch [2,1,3,4] @ [3,4,2]",
      [](G g) { return Inputs{normal(g, {2, 1, 3, 4}), normal(g, {3, 4, 2})}; },
      [](I x) { return one(matmul(x[0], x[1])); });
  add("matmul", "vector @ matrix", [](G g) { return Inputs{normal(g, {4}), normal(g, {4, 3})}; },
      [](I x) { return one(matmul(x[0], x[1])); });
  add("matmul", "batched matrix @ vector", [](G g) { return Inputs{normal(g, {2, 3, 4}), normal(g, {4})}; },
      [](I x) { return one(matmul(x[0], x[1])); });
  add("matmul", "vector @ vector", [](G g) { return Inputs{normal(g, {5}), normal(g, {5})}; },
      [](I x) { return one(matmul(x[0], x[1])); });
  add("linear", "with bias, 3-d input", [](G g) { return Inputs{normal(g, {2, 3, 4}), normal(g, {5, 4}), normal(g, {5})}; },
      [](I x) { return one(linear(x[0], x[1], x[2])); });
  add("linear", "no bias, frozen input", [](G g) { return Inputs{constant(randn({3, 4}, g, DType::f64)), normal(g, {5, 4})}; },
      [](I x) { return one(linear(x[0], x[1])); });
  add("linear", "1-d input", [](G g) { return Inputs{normal(g, {4}), normal(g, {3, 4}), normal(g, {3})}; },
      [](I x) { return one(linear(x[0], x[1], x[2])); });

  // views and shape ops
  add("reshape", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(reshape(x[0], {2, -1})); });
  add("reshape", "flatten", [](G g) { return Inputs{normal(g, {2, 3, 4})}; }, [](I x) { return one(x[0].flatten(1)); });
  add("view", "split the last dim", [](G g) { return Inputs{normal(g, {3, 4})}; },
      [](I x) { return one(view(x[0], {3, 2, 2})); });
  add("permute", "", [](G g) { return Inputs{normal(g, {2, 3, 4})}; }, [](I x) { return one(permute(x[0], {2, 0, 1})); });
  add("transpose", "", [](G g) { return Inputs{normal(g, {3, 4, 2})}; }, [](I x) { return one(transpose(x[0], 0, 2)); });
  add("narrow", "", [](G g) { return Inputs{normal(g, {5, 3})}; }, [](I x) { return one(narrow(x[0], 0, 1, 3)); });
  add("slice", "step 2", [](G g) { return Inputs{normal(g, {7, 3})}; }, [](I x) { return one(slice(x[0], 0, 1, 6, 2)); });
  add("select", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(select(x[0], 1, 2)); });
  add("expand", "new leading dim", [](G g) { return Inputs{normal(g, {3, 1})}; },
      [](I x) { return one(expand(x[0], {2, 3, 4})); });
  add("squeeze", "", [](G g) { return Inputs{normal(g, {3, 1, 4})}; }, [](I x) { return one(squeeze(x[0], 1)); });
  add("unsqueeze", "", [](G g) { return Inputs{normal(g, {3, 4})}; }, [](I x) { return one(unsqueeze(x[0], 1)); });
  add("contiguous", "of a transpose", [](G g) { return Inputs{normal(g, {3, 4})}; },
      [](I x) { return one(contiguous(x[0].t())); });
  // Through f32: the finite difference needs a step well above f32 rounding; cast is linear.
  Case* c = add("cast", "f64 -> f32", [](G g) { return Inputs{normal(g, {3, 4})}; },
                [](I x) { return one(cast(x[0], DType::f32)); });
  c->eps = 1e-2;
  c->atol = 1e-4;

  // assembly and gathers
  add("cat", "dim 0, three inputs", [](G g) { return Inputs{normal(g, {2, 3}), normal(g, {4, 3}), normal(g, {1, 3})}; },
      [](I x) { return one(cat({x[0], x[1], x[2]}, 0)); });
  add("cat", "dim -1, a constant input",
      [](G g) { return Inputs{normal(g, {2, 3}), constant(randn({2, 2}, g, DType::f64)), normal(g, {2, 1})}; },
      [](I x) { return one(cat({x[0], x[1], x[2]}, -1)); });
  add("stack", "dim 1", [](G g) { return Inputs{normal(g, {3, 4}), normal(g, {3, 4}), normal(g, {3, 4})}; },
      [](I x) { return one(stack({x[0], x[1], x[2]}, 1)); });
  add("split", "size 3 along dim 0, all outputs", [](G g) { return Inputs{normal(g, {7, 3})}; },
      [](I x) { return split(x[0], 3, 0); });
  add("split", "sizes {1,3} along dim 1, only the second output used", [](G g) { return Inputs{normal(g, {3, 4})}; },
      [](I x) { return one(split(x[0], std::vector<int64_t>{1, 3}, 1)[1]); });
  add("split", "chunk", [](G g) { return Inputs{normal(g, {3, 5})}; }, [](I x) { return chunk(x[0], 2, 1); });
  add("index_select", "repeated indices", [](G g) { return Inputs{normal(g, {5, 3})}; },
      [](I x) { return one(index_select(x[0], 0, ids({0, 3, 3, 1}, {4}))); });
  add("index_select", "dim 1", [](G g) { return Inputs{normal(g, {3, 5})}; },
      [](I x) { return one(index_select(x[0], 1, ids({4, 0, 4}, {3}))); });
  add("embedding", "2-d ids with repeats", [](G g) { return Inputs{normal(g, {6, 4})}; },
      [](I x) { return one(embedding(x[0], ids({1, 5, 1, 0, 2, 5}, {2, 3}))); });

  // LLaMA ops
  add("rmsnorm", "", [](G g) { return Inputs{normal(g, {2, 3, 8}), normal(g, {8})}; },
      [](I x) { return one(rmsnorm(x[0], x[1], 1e-5)); });
  auto rope_case = [&](RopeLayout layout, std::string what) {
    add("rope", what, [](G g) { return Inputs{normal(g, {2, 3, 2, 8})}; },
        [layout](I x) {
          Tensor cos, sin;
          Tensor inv_freq = from_vector<float>({1.0f, 0.3f, 0.1f, 0.03f}, {4});
          rope_tables(arange(3, DType::i64), inv_freq, cos, sin);
          return one(rope(x[0], cos, sin, layout));
        });
  };
  rope_case(RopeLayout::half, "half layout");
  rope_case(RopeLayout::interleaved, "interleaved layout");
  add("swiglu", "", [](G g) { return Inputs{normal(g, {3, 7}), normal(g, {3, 7})}; },
      [](I x) { return one(swiglu(x[0], x[1])); });
  add("attention", "GQA 4 heads over 2 kv heads",
      [](G g) { return Inputs{normal(g, {2, 5, 4, 3}), normal(g, {2, 5, 2, 3}), normal(g, {2, 5, 2, 3})}; },
      [](I x) { return one(attention(x[0], x[1], x[2], 1.0 / std::sqrt(3.0))); });
  add("attention", "packed documents (cu_seqlens)",
      [](G g) { return Inputs{normal(g, {1, 6, 2, 3}), normal(g, {1, 6, 1, 3}), normal(g, {1, 6, 1, 3})}; },
      [](I x) {
        Tensor cu = from_vector<int32_t>({0, 2, 6}, {3});
        return one(attention(x[0], x[1], x[2], 0.5, cu));
      });
  // SMoRA's routed update: 5 tokens, 6 ranks, 2 or 3 selected per token (one token with a single
  // rank, where the gate is the constant scale and ds is 0), positive scores as a router gives.
  add("gated_lowrank", "6 ranks, 1-3 selected per token",
      [](G g) { return Inputs{normal(g, {5, 7}), normal(g, {6, 7}), normal(g, {4, 6}), positive(g, {5, 6})}; },
      [](I x) {
        Tensor m = from_vector<int64_t>({1, 0, 1, 0, 0, 1,  //
                                         0, 1, 1, 0, 0, 0,  //
                                         0, 0, 0, 1, 0, 0,  //
                                         1, 1, 0, 0, 1, 0,  //
                                         0, 0, 1, 0, 1, 1},
                                        {5, 6});
        return one(gated_lowrank(x[0], x[1], x[2], x[3], ne(m, 0.0), 1.5));
      });
  // The same with the router inside: the scores come from the current x_r and W (so finite
  // differences see them move), the selection stays fixed; x_r separate from x, or x itself.
  auto routed_case = [&](RouterScore score, bool shared, std::string what) {
    add("routed_lowrank", what,
        [shared](G g) {
          Inputs in{normal(g, {5, 7}), normal(g, {6, 7}), normal(g, {4, 6}), normal(g, {6, 7})};
          if (!shared) in.push_back(normal(g, {5, 7}));
          return in;
        },
        [score, shared](I x) {
          const Variable& xr = shared ? x[0] : x[4];
          Tensor logits = mlr::linear(xr.data(), x[3].data());
          Tensor s = score == RouterScore::sigmoid ? mlr::sigmoid(logits) : mlr::softmax(logits, -1);
          Tensor m = ne(from_vector<int64_t>({1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0,
                                              1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 1, 1},
                                             {5, 6}),
                        0.0);
          return one(routed_lowrank(x[0], xr, x[1], x[2], x[3], s, m, 0.75, score));
        });
  };
  routed_case(RouterScore::sigmoid, false, "sigmoid router, x_r separate");
  routed_case(RouterScore::sigmoid, true, "sigmoid router reading x");
  routed_case(RouterScore::softmax, false, "softmax router, x_r separate");
  routed_case(RouterScore::softmax, true, "softmax router reading x");
  auto ce_case = [&](Reduction red, std::string what) {
    add("cross_entropy", what, [](G g) { return Inputs{normal(g, {5, 7})}; },
        [red](I x) { return one(cross_entropy(x[0], ids({3, -100, 0, 6, 3}, {5}), -100, red)); });
  };
  ce_case(Reduction::mean, "mean, one ignored row");
  ce_case(Reduction::sum, "sum");
  ce_case(Reduction::none, "none");
  return r;
}

const std::vector<Case>& registry() {
  static const std::vector<Case> cases = build_registry();
  return cases;
}

// The same values in a non-contiguous view: every other element of the last dim of a buffer
// twice as wide.
Variable noncontiguous(const Variable& v) {
  if (!v.requires_grad() || v.dim() == 0) return v;
  Shape wide = v.shape();
  wide.back() *= 2;
  Tensor view = zeros(wide, v.dtype()).slice(-1, 0, wide.back(), 2);
  view.copy_(v.data());
  return Variable::leaf(view);
}

bool graph_contains(const std::vector<Variable>& outs, const std::string& name) {
  std::vector<Node*> stack;
  std::unordered_set<Node*> seen;
  for (const Variable& o : outs)
    if (o.grad_fn()) stack.push_back(o.grad_fn().get());
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    if (!seen.insert(n).second) continue;
    if (n->name() == name) return true;
    for (const Edge& e : n->next_edges())
      if (e.valid()) stack.push_back(e.node.get());
  }
  return false;
}

}  // namespace

TEST_CASE("every differentiable op has a gradcheck case") {
  std::map<std::string, int> count;
  for (const Case& c : registry()) count[c.op]++;
  const auto& ops = differentiable_ops();
  std::set<std::string> known(ops.begin(), ops.end());
  for (const std::string& op : ops) {
    INFO("op: ", op);
    CHECK_MESSAGE(count[op] > 0, "differentiable op '", op, "' has no gradcheck case in tests/autograd/gradcheck_test.cpp");
  }
  for (const Case& c : registry()) {
    INFO("case: ", c.op, " ", c.what);
    CHECK_MESSAGE(known.count(c.op) == 1, "gradcheck case for '", c.op, "', which is not in differentiable_ops()");
  }
}

TEST_CASE("every differentiable op passes gradcheck in float64 (contiguous and non-contiguous inputs)") {
  uint64_t seed = 1000;
  for (const Case& c : registry()) {
    for (bool strided : {false, true}) {
      INFO("op ", c.op, " (", c.what, ")", std::string(strided ? " on non-contiguous inputs" : ""));
      Generator gen(++seed);
      Inputs inputs = c.inputs(gen);
      if (strided)
        for (Variable& v : inputs) v = noncontiguous(v);
      // The case must exercise the op's own derivative rule.
      std::vector<Variable> probe;
      for (const Variable& v : inputs) probe.push_back(v.requires_grad() ? Variable::leaf(v.data()) : v);
      GradcheckResult r;
      try {
        CHECK_MESSAGE(graph_contains(c.fn(probe), c.op), "the graph of the case has no '", c.op, "' node");
        r = gradcheck(c.fn, inputs, c.eps, c.atol, c.rtol, seed);
      } catch (const Error& e) {
        r = {false, e.what()};
      }
      CHECK_MESSAGE(r.ok, r.message);
    }
  }
}

// CUDA against CPU, one harness for every op (in the manner of ggml's test-backend-ops): each case
// draws fresh random inputs on the CPU in the dtype under test, runs the op on the CPU and on a
// CUDA copy of the same inputs, and compares the results in f32 with the tolerance of the dtype.
// New CUDA allocations are poisoned (0xFF bytes: NaN) for the whole suite, so a kernel that leaves
// part of its output unwritten fails. Backward kernels are checked the same way, with the CPU
// saved statistics (rstd, lse) fed to both sides.
//
// The elementwise ops and reductions come from the op table (tensor/op_table.h): every entry runs
// in f32, bf16, f16 (and i32 where the op takes integers) on inputs from its domain, contiguous (the
// vectorised kernels) and strided (the indexed ones), at the entry's tolerance. An op added to the
// table is in this harness without a line here. The fused ops (softmax, matmul, gathers, the LLaMA
// ops) have a case each below.
//
// Tolerances (|cuda - cpu| <= atol + rtol |cpu|): both sides compute in f32 and round once, so
// they differ by summation order and at most an ulp or two of the output dtype.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/cuda/runtime.h"
#include "tensor/nn_ops.h"
#include "tensor/op_table.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

using namespace mlr;

namespace {

struct Tolerance {
  double atol, rtol;
};

Tolerance tolerance_of(DType t) {
  switch (t) {
    case DType::bf16: return {2e-2, 2e-2};
    case DType::f16: return {2e-3, 4e-3};
    case DType::f64: return {1e-12, 1e-12};
    default: return {2e-5, 2e-5};
  }
}

const std::vector<DType> kFloatTypes = {DType::f32, DType::bf16, DType::f16};

struct PoisonGuard {
  PoisonGuard() { cuda::set_poison_allocations(true); }
  ~PoisonGuard() { cuda::set_poison_allocations(false); }
};

// Compares a CUDA result with its CPU reference (any dtype; integers and bools exactly).
void expect_close(const std::string& what, const Tensor& cpu_result, const Tensor& cuda_result, Tolerance tol) {
  REQUIRE_MESSAGE(cuda_result.device().is_cuda(), what << ": the CUDA result is on " << cuda_result.device().str());
  REQUIRE_MESSAGE(cpu_result.shape() == cuda_result.shape(),
                  what << ": shapes " << shape_str(cpu_result.shape()) << " vs " << shape_str(cuda_result.shape()));
  REQUIRE_MESSAGE(cpu_result.dtype() == cuda_result.dtype(), what << ": dtypes differ");
  const Tensor back = cuda_result.cpu();
  if (!is_floating(cpu_result.dtype())) {
    const auto a = cpu_result.to(DType::i64).to_vector<int64_t>(), b = back.to(DType::i64).to_vector<int64_t>();
    for (size_t i = 0; i < a.size(); ++i)
      REQUIRE_MESSAGE(a[i] == b[i], what << ": element " << i << ": cpu " << a[i] << ", cuda " << b[i]);
    return;
  }
  const auto a = cpu_result.to(DType::f64).to_vector<double>(), b = back.to(DType::f64).to_vector<double>();
  size_t bad = 0, first_bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool both_nan = std::isnan(a[i]) && std::isnan(b[i]);
    const bool same_inf = std::isinf(a[i]) && a[i] == b[i];
    if (both_nan || same_inf) continue;
    if (!(std::abs(a[i] - b[i]) <= tol.atol + tol.rtol * std::abs(a[i]))) {
      if (bad++ == 0) first_bad = i;
    }
  }
  CHECK_MESSAGE(bad == 0, what << ": " << bad << " of " << a.size() << " elements differ; first at " << first_bad
                               << ": cpu " << (a.empty() ? 0 : a[first_bad]) << ", cuda "
                               << (b.empty() ? 0 : b[first_bad]));
}

Generator& gen() {
  static Generator g(20261124);
  return g;
}

Tensor random_input(const Shape& shape, DType dtype, double low = -2.0, double high = 2.0) {
  Tensor t = rand(shape, gen(), {DType::f32});
  return add(mul(t, high - low), low).to(dtype);
}

Tensor to_cuda(const Tensor& t) { return t.to(Device::cuda(0)); }

// An op table tolerance for results in dtype t; integer inputs of floating math give f32 results.
Tolerance tolerance_of(const OpTolerance& tol, DType t) {
  const DTypeTolerance d = t == DType::bf16 ? tol.bf16 : t == DType::f16 ? tol.f16 : tol.f32;
  return {d.atol, d.rtol};
}

// Values from a table domain (tensor/op_table.h) in `dtype`. Integer dtypes get small integers
// (|x| <= 4, of the domain's sign; the conversion truncates toward zero). `specials` puts values on a
// coarse grid (so that comparisons see ties) and, in floating dtypes, NaN, +-inf, +-0 at fixed places.
Tensor domain_input(InputDomain domain, const Shape& shape, DType dtype) {
  const bool integer = !is_floating(dtype);
  Tensor t;
  switch (domain) {
    case InputDomain::normal:
      t = integer ? random_input(shape, DType::f32, -4.0, 4.99) : random_input(shape, DType::f32);
      break;
    case InputDomain::positive:
      t = integer ? random_input(shape, DType::f32, 1.0, 4.99) : random_input(shape, DType::f32, 0.5, 2.0);
      break;
    case InputDomain::nonzero: {
      Tensor magnitude =
          integer ? random_input(shape, DType::f32, 1.0, 4.99) : random_input(shape, DType::f32, 0.2, 1.5);
      t = where(gt(rand(shape, gen(), {DType::f32}), 0.5), magnitude, neg(magnitude));
      break;
    }
    case InputDomain::specials: {
      std::vector<float> v = random_input(shape, DType::f32, -2.0, 2.49).to_vector<float>();
      for (float& x : v) x = std::floor(x * 2.0f) / 2.0f;  // multiples of 0.5 in [-2, 2]
      if (!integer) {
        const float inf = std::numeric_limits<float>::infinity();
        const float specials[] = {std::numeric_limits<float>::quiet_NaN(), inf, -inf, 0.0f, -0.0f};
        for (size_t i = 0; i < v.size(); i += 7) v[i] = specials[(i / 7) % 5];
      }
      t = from_vector<float>(v, shape);
      break;
    }
  }
  return t.to(dtype);
}

// A scalar operand from a domain, for the tensor-scalar forms.
double domain_scalar(InputDomain domain) {
  switch (domain) {
    case InputDomain::normal: return 0.75;
    case InputDomain::positive: return 1.5;
    case InputDomain::nonzero: return -1.25;
    case InputDomain::specials: return 0.5;
  }
  return 0.0;
}

const std::vector<DType> kTableTypes = {DType::f32, DType::bf16, DType::f16, DType::i32};

// Runs `op` on CPU inputs and on their CUDA copies; compares every output.
void check_op(const std::string& name, DType dtype, const std::vector<Tensor>& inputs,
              const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& op,
              std::optional<Tolerance> tol = std::nullopt) {
  std::vector<Tensor> gpu_inputs;
  for (const Tensor& t : inputs) gpu_inputs.push_back(t.defined() ? to_cuda(t) : t);
  const std::vector<Tensor> want = op(inputs);
  const std::vector<Tensor> got = op(gpu_inputs);
  REQUIRE(want.size() == got.size());
  for (size_t i = 0; i < want.size(); ++i)
    expect_close(fmt::format("{} [{}] output {}", name, dtype_name(dtype), i), want[i], got[i],
                 tol.value_or(tolerance_of(dtype)));
}

}  // namespace

TEST_CASE("cuda vs cpu: every unary op of the table, contiguous and strided, in every dtype") {
  PoisonGuard poison;
  for (const UnaryOpInfo& op : kUnaryOps) {
    for (DType t : kTableTypes) {
      const Tolerance tol = tolerance_of(op.tol, t);
      const UnaryOp code = op.op;
      check_op(fmt::format("{} contiguous", op.name), t, {domain_input(op.inputs, {37, 53}, t)},
               [code](auto& x) { return std::vector<Tensor>{apply(code, x[0])}; }, tol);
      check_op(fmt::format("{} transposed view", op.name), t, {domain_input(op.inputs, {53, 37}, t)},
               [code](auto& x) { return std::vector<Tensor>{apply(code, x[0].t())}; }, tol);
    }
  }
}

TEST_CASE("cuda vs cpu: every binary op of the table, broadcast, strided and with a scalar, in every dtype") {
  PoisonGuard poison;
  for (const BinaryOpInfo& op : kBinaryOps) {
    for (DType t : kTableTypes) {
      const Tolerance tol = tolerance_of(op.tol, t);
      const BinaryOp code = op.op;
      auto fn = [code](const Tensor& x, const Tensor& y) { return apply(code, x, y); };
      const Tensor a = domain_input(op.a_inputs, {37, 53}, t);
      check_op(fmt::format("{} same shape", op.name), t, {a, domain_input(op.b_inputs, {37, 53}, t)},
               [fn](auto& x) { return std::vector<Tensor>{fn(x[0], x[1])}; }, tol);
      check_op(fmt::format("{} broadcast [37,53] op [53]", op.name), t, {a, domain_input(op.b_inputs, {53}, t)},
               [fn](auto& x) { return std::vector<Tensor>{fn(x[0], x[1])}; }, tol);
      check_op(fmt::format("{} broadcast [37,1] op [53]", op.name), t,
               {domain_input(op.a_inputs, {37, 1}, t), domain_input(op.b_inputs, {53}, t)},
               [fn](auto& x) { return std::vector<Tensor>{fn(x[0], x[1])}; }, tol);
      check_op(fmt::format("{} transposed view", op.name), t, {a, domain_input(op.b_inputs, {53, 37}, t)},
               [fn](auto& x) { return std::vector<Tensor>{fn(x[0], x[1].t())}; }, tol);
      const double s = domain_scalar(op.b_inputs);
      check_op(fmt::format("{} scalar {}", op.name, s), t, {a},
               [code, s](auto& x) { return std::vector<Tensor>{apply(code, x[0], s), apply(code, x[0].t(), s)}; },
               tol);
    }
  }
}

TEST_CASE("cuda vs cpu: every unary derivative of the table, contiguous and strided") {
  PoisonGuard poison;
  for (const UnaryBackwardOpInfo& op : kUnaryBackwardOps) {
    for (DType t : kFloatTypes) {
      const UnaryBackwardOp code = op.op;
      auto fn = [code](const Tensor& g, const Tensor& saved) { return apply(code, g, saved); };
      const bool from_output = op.saved == SavedTensor::output;
      // The saved tensor as autograd saves it: the forward's input, or its output (computed on the
      // CPU and copied, so only the derivative kernel is compared).
      const Tensor x = random_input({37, 53}, t);
      const Tensor saved = from_output ? apply(op.forward, x) : x;
      check_op(fmt::format("{} contiguous", op.function), t, {random_input({37, 53}, t), saved},
               [fn](auto& v) { return std::vector<Tensor>{fn(v[0], v[1])}; }, tolerance_of(op.tol, t));
      check_op(fmt::format("{} strided g, broadcast g", op.function), t,
               {random_input({53, 37}, t), saved, random_input({53}, t)},
               [fn](auto& v) { return std::vector<Tensor>{fn(v[0].t(), v[1]), fn(v[2], v[1])}; },
               tolerance_of(op.tol, t));
    }
  }
}

TEST_CASE("cuda vs cpu: every reduction of the table, over rows, columns and everything") {
  PoisonGuard poison;
  for (const ReduceOpInfo& op : kReduceOps) {
    for (DType t : kTableTypes) {
      if (op.op == ReduceOp::mean && !is_floating(t)) continue;  // the mean of integers is an error
      const ReduceOp code = op.op;
      auto fn = [code](const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
        return apply(code, x, dims, keepdim);
      };
      const Tolerance tol = tolerance_of(op.tol, t);
      check_op(fmt::format("{}", op.name), t, {domain_input(InputDomain::normal, {7, 129, 33}, t)},
               [fn](auto& x) {
                 return std::vector<Tensor>{fn(x[0], {1}, false), fn(x[0], {0, 2}, false), fn(x[0], {2}, true),
                                            fn(x[0], {}, false), fn(x[0].transpose(0, 2), {0}, false)};
               },
               tol);
      // A long reduction split over blocks (the partial-results path).
      check_op(fmt::format("{} long row", op.name), t, {domain_input(InputDomain::normal, {2, 70001}, t)},
               [fn](auto& x) { return std::vector<Tensor>{fn(x[0], {1}, false), fn(x[0], {0}, false)}; }, tol);
    }
  }
}

TEST_CASE("cuda vs cpu: clamp, where, masked_fill, casts and copies") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    Tensor a = random_input({37, 53}, t), c = random_input({53, 37}, t);
    check_op("clamp", t, {a}, [](auto& x) {
      return std::vector<Tensor>{clamp(x[0], -0.5, 0.7), clamp(x[0].t(), std::nullopt, 0.2), clamp(x[0], 0.3, -0.3)};
    });
    check_op("comparisons and where", t, {a, c}, [](auto& x) {
      Tensor cond = gt(x[0], x[1].t());
      return std::vector<Tensor>{cond, where(cond, x[0], x[1].t()), masked_fill(x[0], cond, -1.0)};
    });
    check_op("cast and contiguous copy", t, {random_input({4, 5, 6}, t)}, [](auto& x) {
      return std::vector<Tensor>{x[0].permute({2, 0, 1}).contiguous(), x[0].to(DType::f32), x[0].to(DType::i32)};
    });
  }
}

TEST_CASE("cuda vs cpu: top-k selection masks") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    // Values on a coarse grid so that ties occur; with and without a bias; k from 0 to n.
    std::vector<float> grid(37 * 8);
    uint32_t state = 12345;
    for (float& v : grid) {
      state = state * 1664525u + 1013904223u;
      v = 0.5f * static_cast<float>((state >> 16) % 5) - 1.0f;
    }
    Tensor scores = from_vector<float>(grid, {37, 8}).to(t);
    Tensor bias = random_input({8}, DType::f32, -0.5, 0.5);
    for (int64_t k : {0, 1, 2, 5, 8}) {
      check_op(fmt::format("topk_mask k={}", k), t, {scores, bias}, [k](auto& x) {
        return std::vector<Tensor>{topk_mask(x[0], k), topk_mask(x[0], k, x[1])};
      });
    }
  }
}

TEST_CASE("cuda vs cpu: reductions and softmax") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    Tensor a = random_input({7, 129, 33}, t);
    check_op("sum/mean/amax", t, {a}, [](auto& x) {
      return std::vector<Tensor>{sum(x[0], {1}), mean(x[0], {0, 2}), amax(x[0], {2}, true), sum(x[0])};
    });
    check_op("argmax", t, {a}, [](auto& x) { return std::vector<Tensor>{argmax(x[0], 1)}; });
    check_op("logsumexp", t, {a}, [](auto& x) { return std::vector<Tensor>{logsumexp(x[0], 1)}; });
    check_op("softmax", t, {a}, [](auto& x) {
      return std::vector<Tensor>{softmax(x[0], -1), log_softmax(x[0], 1), softmax(x[0].transpose(0, 2), 0)};
    });
    Tensor g = random_input({7, 129, 33}, t);
    check_op("softmax backward", t, {g, a}, [](auto& x) {
      Tensor y = softmax(x[1], -1), ly = log_softmax(x[1], -1);
      return std::vector<Tensor>{softmax_backward(x[0], y, -1), log_softmax_backward(x[0], ly, -1)};
    });
  }
}

TEST_CASE("cuda vs cpu: matmul with transposes and batches") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    // Sums of k products: the tolerance grows with sqrt(k) for the 16-bit types.
    Tolerance tol = tolerance_of(t);
    tol.atol *= 4;
    Tensor a = random_input({3, 65, 47}, t), b = random_input({3, 47, 31}, t), w = random_input({31, 47}, t);
    check_op("matmul batched", t, {a, b}, [](auto& x) { return std::vector<Tensor>{matmul(x[0], x[1])}; }, tol);
    check_op("matmul x @ w^T (linear)", t, {a, w}, [](auto& x) { return std::vector<Tensor>{linear(x[0], x[1])}; }, tol);
    check_op("matmul transposed a", t, {a, random_input({3, 65, 20}, t)},
             [](auto& x) { return std::vector<Tensor>{matmul(x[0].transpose(1, 2), x[1])}; }, tol);
    check_op("matmul broadcast batch", t, {random_input({65, 47}, t), b},
             [](auto& x) { return std::vector<Tensor>{matmul(x[0], x[1])}; }, tol);
    check_op("matmul empty k", t, {random_input({5, 0}, t), random_input({0, 4}, t)},
             [](auto& x) { return std::vector<Tensor>{matmul(x[0], x[1])}; });
  }
}

TEST_CASE("cuda vs cpu: gathers, scatters, cat and split") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    Tensor table = random_input({50, 24}, t);
    Tensor ids = from_vector<int64_t>({3, 7, 3, 49, 0, 7, 7, 12}, {2, 4});
    check_op("embedding", t, {table, ids}, [](auto& x) { return std::vector<Tensor>{embedding(x[0], x[1])}; });
    check_op("embedding backward (repeated ids)", t, {random_input({2, 4, 24}, t), ids},
             [](auto& x) { return std::vector<Tensor>{embedding_backward(x[0], x[1], 50)}; });
    Tensor idx = from_vector<int64_t>({4, 0, 4, 2}, {4});
    check_op("index_select / index_add", t, {random_input({3, 5, 6}, t), idx, random_input({3, 4, 6}, t)},
             [](auto& x) {
               return std::vector<Tensor>{index_select(x[0], 1, x[1]), index_add(x[0], 1, x[1], x[2])};
             });
    check_op("cat / split", t, {random_input({3, 5}, t), random_input({3, 2}, t)}, [](auto& x) {
      Tensor c = cat({x[0], x[1]}, 1);
      auto parts = split(c, {4, 3}, 1);
      return std::vector<Tensor>{c, parts[0].contiguous(), parts[1].contiguous(), stack({x[0], x[0]}, 0)};
    });
  }
}

TEST_CASE("cuda vs cpu: Philox random numbers are the same on both devices") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    Generator g1(7), g2(7);
    Tensor cpu = rand({1001}, g1, {t});
    Tensor gpu = rand({1001}, g2, {t, Device::cuda(0)});
    expect_close("rand", cpu, gpu, {0, 0});
    Tensor cpu_n = randn({257, 3}, g1, {t});
    Tensor gpu_n = randn({257, 3}, g2, {t, Device::cuda(0)});
    expect_close("randn", cpu_n, gpu_n, tolerance_of(t));
  }
}

TEST_CASE("cuda vs cpu: rmsnorm, rope and swiglu forward and backward") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    for (int64_t d : {64, 4096 + 8, 33}) {
      Tensor x = random_input({5, 3, d}, t), w = random_input({d}, t), dy = random_input({5, 3, d}, t);
      check_op(fmt::format("rmsnorm d={}", d), t, {x, w, dy}, [](auto& v) {
        RmsNormOutput f = rmsnorm_forward(v[0], v[1], 1e-5);
        // Backward from the CPU rstd on both sides, so only the backward kernel is compared.
        Tensor rstd = v[0].device().is_cuda() ? rmsnorm_forward(v[0].cpu(), v[1].cpu(), 1e-5).rstd.cuda() : f.rstd;
        Tensor dw;
        Tensor dx = rmsnorm_backward(v[2], v[0], v[1], rstd, &dw);
        Tensor dx_frozen = rmsnorm_backward(v[2], v[0], v[1], rstd, nullptr);
        return std::vector<Tensor>{f.y, f.rstd, dx, dw, dx_frozen};
      });
    }
    for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
      Tensor x = random_input({2, 7, 3, 16}, t);
      Tensor positions = from_vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 0, 1, 2, 3}, {2, 7});
      Tensor inv_freq = random_input({8}, DType::f32, 0.01, 1.0);
      check_op("rope", t, {x, positions, inv_freq}, [layout](auto& v) {
        Tensor cos, sin;
        rope_tables(v[1], v[2], cos, sin);
        return std::vector<Tensor>{cos, sin, rope_forward(v[0], cos, sin, layout), rope_backward(v[0], cos, sin, layout)};
      });
    }
    for (int64_t n : {64 * 11, 7}) {  // vectorised and scalar paths
      Tensor gate = random_input({n}, t, -6, 6), up = random_input({n}, t), dh = random_input({n}, t);
      check_op("swiglu", t, {gate, up, dh}, [](auto& v) {
        Tensor dgate, dup;
        swiglu_backward(v[2], v[0], v[1], dgate, dup);
        return std::vector<Tensor>{swiglu_forward(v[0], v[1]), dgate, dup};
      });
    }
  }
}

TEST_CASE("cuda vs cpu: cross-entropy with ignore_index") {
  PoisonGuard poison;
  for (DType t : kFloatTypes) {
    for (int64_t vocab : {32000, 37}) {
      Tensor logits = random_input({6, vocab}, t, -8, 8);
      Tensor targets = from_vector<int64_t>({0, vocab - 1, -100, 5, -100, 17 % vocab}, {6});
      Tensor g = random_input({6}, DType::f32);
      check_op(fmt::format("cross_entropy V={}", vocab), t, {logits, targets, g}, [](auto& v) {
        CrossEntropyOutput f = cross_entropy_forward(v[0], v[1], -100);
        return std::vector<Tensor>{f.losses, f.lse, cross_entropy_backward(v[2], v[0], v[1], f.lse, -100)};
      });
    }
  }
}

TEST_CASE("cuda vs cpu: causal attention (MHA, GQA, packed documents; head dims 64 and 128)") {
  PoisonGuard poison;
  struct Case {
    int64_t batch, seq, heads, kv_heads, dim;
    std::vector<int32_t> cu;
  };
  const std::vector<Case> cases = {{2, 33, 4, 4, 64, {}},   {1, 40, 8, 2, 128, {}},
                                   {1, 37, 4, 2, 64, {0, 10, 10, 29, 37}},
                                   {2, 5, 2, 1, 16, {}},    {1, 200, 4, 2, 128, {}},
                                   {1, 300, 2, 1, 64, {0, 70, 70, 190, 300}}};
  struct KernelReset {
    ~KernelReset() { cuda::set_attention_kernel(cuda::AttentionKernel::automatic); }
  } reset;
  for (DType t : kFloatTypes) {
    for (const Case& c : cases) {
      Tensor q = random_input({c.batch, c.seq, c.heads, c.dim}, t), k = random_input({c.batch, c.seq, c.kv_heads, c.dim}, t),
             v = random_input({c.batch, c.seq, c.kv_heads, c.dim}, t), dout = random_input({c.batch, c.seq, c.heads, c.dim}, t);
      Tensor cu = c.cu.empty() ? Tensor() : from_vector<int32_t>(c.cu, {static_cast<int64_t>(c.cu.size())});
      const double scale = 1.0 / std::sqrt(double(c.dim));
      const std::string name = fmt::format("attention B={} S={} H={} Hkv={} D={}{}", c.batch, c.seq, c.heads, c.kv_heads,
                                           c.dim, c.cu.empty() ? "" : " packed");
      auto run = [scale](const std::vector<Tensor>& x) {
        AttentionOutput f = attention_forward(x[0], x[1], x[2], scale, x[4]);
        AttentionGrads g = attention_backward(x[3], x[0], x[1], x[2], f.out, f.lse, scale, x[4]);
        return std::vector<Tensor>{f.out, f.lse, g.dq, g.dk, g.dv};
      };
      // The reference kernel computes as the CPU does (f32, one rounding): element-wise tolerances.
      cuda::set_attention_kernel(cuda::AttentionKernel::reference);
      check_op(name + " reference kernel", t, {q, k, v, dout, cu}, run);
      // The flash kernel also rounds P and dS to the input dtype before its second products:
      // its error is bounded relative to the largest value of each output (the bounds hold with
      // margin under the CPU emulation of the same kernels, tests/tensor/flash_attention_emulated_test.cpp).
      if ((t == DType::bf16 || t == DType::f16) && (c.dim == 64 || c.dim == 128)) {
        cuda::set_attention_kernel(cuda::AttentionKernel::flash);
        std::vector<Tensor> gpu_inputs;
        for (const Tensor& x : {q, k, v, dout, cu}) gpu_inputs.push_back(x.defined() ? to_cuda(x) : x);
        const std::vector<Tensor> want = run({q, k, v, dout, cu}), got = run(gpu_inputs);
        const double bound = t == DType::bf16 ? 2e-2 : 4e-3;
        const char* outputs[] = {"out", "lse", "dq", "dk", "dv"};
        for (size_t i = 0; i < want.size(); ++i) {
          const auto a = want[i].to(DType::f64).to_vector<double>(), b = got[i].cpu().to(DType::f64).to_vector<double>();
          double worst = 0, largest = 1e-30;
          for (size_t j = 0; j < a.size(); ++j) {
            largest = std::max(largest, std::abs(a[j]));
            worst = std::isnan(b[j]) ? INFINITY : std::max(worst, std::abs(a[j] - b[j]));
          }
          const std::string what = fmt::format("{} flash [{}] {}", name, dtype_name(t), outputs[i]);
          MESSAGE(what << ": max error / max |value| = " << worst / largest);
          CHECK_MESSAGE(worst / largest <= bound, what << ": " << worst / largest << " > " << bound);
        }
      }
    }
  }
}

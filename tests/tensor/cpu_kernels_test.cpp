// The vectorised CPU kernels (tensor/kernels/cpu/simd.h) at every instruction-set level this CPU
// runs (AVX-512, AVX2, the baseline), against the f64 path of the same op on the same inputs
// (rounded to the test dtype first, so only the kernel's own rounding is measured): shapes that
// span several attention blocks (64) and vector widths with odd remainders, packed documents
// whose boundaries fall inside blocks, grouped-query heads; the AVX512-BF16 matrix product with
// odd sizes and transposed operands; fast_exp over the whole f32 range.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

std::vector<double> values(const Tensor& t) { return t.to(DType::f64).contiguous().to_vector<double>(); }

// |got - expected| <= atol + rtol |expected| everywhere, reporting the worst element.
void check_close(const Tensor& got, const Tensor& expected, double rtol, double atol, const std::string& what) {
  const std::vector<double> g = values(got), e = values(expected);
  REQUIRE(g.size() == e.size());
  size_t worst = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < g.size(); ++i) {
    const double excess = std::abs(g[i] - e[i]) - (atol + rtol * std::abs(e[i]));
    if (std::isnan(g[i]) != std::isnan(e[i]) || excess > worst_excess) {
      worst_excess = std::isnan(g[i]) != std::isnan(e[i]) ? 1e300 : excess;
      worst = i;
    }
  }
  INFO(what << ": element " << worst << " is " << g[worst] << ", expected " << e[worst]);
  CHECK(worst_excess <= 0);
}

// Random inputs in dtype t (scale s) and their exact f64 copy.
struct Input {
  Tensor low, exact;
};
Input input(const Shape& shape, uint64_t seed, DType t, double s = 1.0) {
  Generator gen(seed);
  Tensor low = mul(randn(shape, gen), s).to(t);
  return {low, low.to(DType::f64)};
}

// The levels this CPU runs, widest first.
std::vector<cpu::SimdLevel> levels() {
  std::vector<cpu::SimdLevel> out;
  for (cpu::SimdLevel l : {cpu::SimdLevel::avx512, cpu::SimdLevel::avx2, cpu::SimdLevel::generic})
    if (static_cast<int>(l) <= static_cast<int>(cpu::cpu_simd_level())) out.push_back(l);
  return out;
}

struct LevelCap {
  cpu::SimdLevel previous;
  explicit LevelCap(cpu::SimdLevel l) : previous(cpu::cap_simd_level(l)) {}
  ~LevelCap() { cpu::cap_simd_level(previous); }
};

struct DTypeTol {
  DType dtype;
  double rtol, atol;
};
// f32: the blocked sums round differently from the f64 reference; bf16/f16: one rounding of the
// output on top of f32 math.
const DTypeTol kTols[] = {{DType::f32, 2e-5, 2e-5}, {DType::bf16, 1.6e-2, 1e-2}, {DType::f16, 2e-3, 2e-3}};

}  // namespace

TEST_CASE("cpu kernels: fast_exp within 2 ulp of exp over the f32 range, exact at the edges") {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.001953125f) {
    const double e = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(cpu::fast_exp(x) - e) / e);
  }
  CHECK(worst < 2.5e-7);
  CHECK(cpu::fast_exp(-std::numeric_limits<float>::infinity()) == 0.0f);
  CHECK(cpu::fast_exp(-100.0f) == 0.0f);
  CHECK(cpu::fast_exp(0.0f) == 1.0f);
  CHECK(std::isinf(cpu::fast_exp(100.0f)));
  CHECK(std::isinf(cpu::fast_exp(std::numeric_limits<float>::infinity())));
  CHECK(std::isnan(cpu::fast_exp(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("cpu kernels: blocked attention forward and backward at every level against f64") {
  struct Case {
    int64_t batch, seq, heads, kv_heads, dim;
    std::vector<int64_t> cu;  // packed documents (batch 1), or empty
  };
  const std::vector<Case> cases = {
      {2, 150, 6, 2, 40, {}},                 // three query/key blocks, the last partial; GQA 3
      {1, 200, 4, 4, 24, {0, 37, 100, 163, 200}},  // document boundaries inside blocks
      {1, 70, 2, 1, 17, {0, 70}},
  };
  for (cpu::SimdLevel level : levels()) {
    LevelCap cap(level);
    for (const Case& c : cases) {
      for (const DTypeTol& tol : kTols) {
        const std::string what = std::string(cpu::simd_level_name(level)) + " " + dtype_name(tol.dtype) + " seq " +
                                 std::to_string(c.seq);
        CAPTURE(what);
        Input q = input({c.batch, c.seq, c.heads, c.dim}, 1, tol.dtype);
        Input k = input({c.batch, c.seq, c.kv_heads, c.dim}, 2, tol.dtype);
        Input v = input({c.batch, c.seq, c.kv_heads, c.dim}, 3, tol.dtype);
        Input up = input({c.batch, c.seq, c.heads, c.dim}, 4, tol.dtype);
        const Tensor cu = c.cu.empty() ? Tensor() : from_vector(c.cu, {static_cast<int64_t>(c.cu.size())});
        const double scale = 1.0 / std::sqrt(static_cast<double>(c.dim));
        AttentionOutput got = attention_forward(q.low, k.low, v.low, scale, cu);
        AttentionOutput ref = attention_forward(q.exact, k.exact, v.exact, scale, cu);
        check_close(got.out, ref.out, tol.rtol, tol.atol, what + " out");
        check_close(got.lse, ref.lse, 2e-5, 2e-5, what + " lse");
        // backward from the f64 forward's statistics rounded like the kernel's own
        AttentionGrads g = attention_backward(up.low, q.low, k.low, v.low, got.out, got.lse, scale, cu);
        AttentionGrads r = attention_backward(up.exact, q.exact, k.exact, v.exact, ref.out, ref.lse, scale, cu);
        const double grad_rtol = tol.dtype == DType::f32 ? 1e-4 : 4 * tol.rtol;
        const double grad_atol = tol.dtype == DType::f32 ? 1e-4 : 4 * tol.atol;
        check_close(g.dq, r.dq, grad_rtol, grad_atol, what + " dq");
        check_close(g.dk, r.dk, grad_rtol, grad_atol, what + " dk");
        check_close(g.dv, r.dv, grad_rtol, grad_atol, what + " dv");
      }
    }
  }
}

TEST_CASE("cpu kernels: rmsnorm, rope, swiglu and cross-entropy at every level against f64") {
  for (cpu::SimdLevel level : levels()) {
    LevelCap cap(level);
    for (const DTypeTol& tol : kTols) {
      const std::string what = std::string(cpu::simd_level_name(level)) + " " + dtype_name(tol.dtype);
      CAPTURE(what);
      const double rtol = tol.rtol, atol = tol.atol;
      {  // rmsnorm over 77 columns (a vector remainder at every width), 9 rows
        Input x = input({9, 77}, 5, tol.dtype), w = input({77}, 6, tol.dtype), dy = input({9, 77}, 7, tol.dtype);
        RmsNormOutput got = rmsnorm_forward(x.low, w.low, 1e-5), ref = rmsnorm_forward(x.exact, w.exact, 1e-5);
        check_close(got.y, ref.y, rtol, atol, what + " rmsnorm y");
        check_close(got.rstd, ref.rstd, 2e-6, 2e-6, what + " rmsnorm rstd");
        Tensor dw_got, dw_ref;
        check_close(rmsnorm_backward(dy.low, x.low, w.low, got.rstd, &dw_got),
                    rmsnorm_backward(dy.exact, x.exact, w.exact, ref.rstd, &dw_ref), 2 * rtol, 2 * atol,
                    what + " rmsnorm dx");
        check_close(dw_got, dw_ref, 2 * rtol, 4 * atol, what + " rmsnorm dw");
      }
      {  // rope, both layouts, head_dim 38 (19 pairs)
        Input x = input({2, 5, 3, 38}, 8, tol.dtype);
        Tensor cos = empty({5, 19}), sin = empty({5, 19});
        std::vector<float> inv(19);
        for (int i = 0; i < 19; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / 38);
        rope_tables(arange(5), from_vector(inv, {19}), cos, sin);
        for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
          check_close(rope_forward(x.low, cos, sin, layout), rope_forward(x.exact, cos, sin, layout), rtol, atol,
                      what + " rope");
          check_close(rope_backward(x.low, cos, sin, layout), rope_backward(x.exact, cos, sin, layout), rtol, atol,
                      what + " rope backward");
        }
      }
      {  // swiglu on 1000 elements, gates out to +-12 (sigmoid saturates)
        Input g = input({10, 100}, 9, tol.dtype, 4.0), u = input({10, 100}, 10, tol.dtype),
              dh = input({10, 100}, 11, tol.dtype);
        check_close(swiglu_forward(g.low, u.low), swiglu_forward(g.exact, u.exact), rtol, atol, what + " swiglu");
        Tensor dg, du, dg_ref, du_ref;
        swiglu_backward(dh.low, g.low, u.low, dg, du);
        swiglu_backward(dh.exact, g.exact, u.exact, dg_ref, du_ref);
        check_close(dg, dg_ref, 2 * rtol, 2 * atol, what + " swiglu dgate");
        check_close(du, du_ref, 2 * rtol, 2 * atol, what + " swiglu dup");
      }
      {  // cross-entropy over 1001 classes, one ignored row
        Input logits = input({6, 1001}, 12, tol.dtype, 3.0);
        const Tensor targets = from_vector(std::vector<int64_t>{3, 1000, -100, 0, 517, 64}, {6});
        const Tensor g = from_vector(std::vector<float>{1, 0.5f, 2, -1, 0.25f, 3}, {6});
        CrossEntropyOutput got = cross_entropy_forward(logits.low, targets);
        CrossEntropyOutput ref = cross_entropy_forward(logits.exact, targets);
        check_close(got.losses, ref.losses, 2e-5, 2e-5, what + " cross-entropy losses");
        check_close(got.lse, ref.lse, 2e-5, 2e-5, what + " cross-entropy lse");
        check_close(cross_entropy_backward(g, logits.low, targets, got.lse),
                    cross_entropy_backward(g.to(DType::f64), logits.exact, targets, ref.lse), rtol, atol,
                    what + " cross-entropy dlogits");
      }
    }
  }
}

TEST_CASE("cpu kernels: bf16 matmul (AVX512-BF16 kernel where the CPU has it) against f64") {
  if (!cpu::cpu_has_avx512_bf16()) MESSAGE("this CPU has no AVX512-BF16: checking the f32-block path");
  // batched, odd k (a zero-padded pair), partial register tiles, both operand layouts
  for (bool transposed : {false, true}) {
    Input a = input({2, 37, 33}, 13, DType::bf16);
    Input b = transposed ? input({2, 70, 33}, 14, DType::bf16) : input({2, 33, 70}, 14, DType::bf16);
    const Tensor bl = transposed ? b.low.transpose(1, 2) : b.low, be = transposed ? b.exact.transpose(1, 2) : b.exact;
    check_close(matmul(a.low, bl), matmul(a.exact, be), 8e-3, 2e-2, transposed ? "a @ b^T" : "a @ b");
  }
  // narrower than a register tile both ways (a LoRA factor), and a single row
  for (const Shape& sa : {Shape{1, 5, 40}, Shape{1, 300, 16}, Shape{1, 1, 64}}) {
    Input a = input(sa, 17, DType::bf16), b = input({1, sa[2], sa[1] == 300 ? 16 : 7}, 18, DType::bf16);
    check_close(matmul(a.low, b.low), matmul(a.exact, b.exact), 8e-3, 2e-2, "narrow " + shape_str(sa));
  }
  // a product large enough for several column blocks and threads, against the f32-block path
  Input a = input({200, 1536}, 15, DType::bf16), b = input({1536, 1100}, 16, DType::bf16);
  check_close(matmul(a.low, b.low), matmul(a.exact, b.exact), 8e-3, 1e-1, "200 x 1536 x 1100");
}

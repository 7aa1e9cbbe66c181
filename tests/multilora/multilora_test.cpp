// MultiLoRA: rank split, init, the stacked product against the per-module sum (forward and
// backward), n = 1 against LoRA, gradcheck of A, B, scales and x, merge/unmerge.
#include <doctest/doctest.h>

#include "autograd/gradcheck.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using mlr::test::error_of;
using mlr::test::random_tensor;

namespace {

// The per-module reference: sum_i s_i (alpha / r_i) B_i A_i x, one small product per module.
Variable per_module_reference(const Variable& x, const MultiLoraLinear& m) {
  Variable total;
  int64_t offset = 0;
  const auto& ranks = m.ranks();
  for (size_t i = 0; i < ranks.size(); ++i) {
    int64_t ri = ranks[i];
    Variable Ai = narrow(m.lora_A(), 0, offset, ri);
    Variable Bi = narrow(m.lora_B(), 1, offset, ri);
    Variable term = mul(linear(linear(x, Ai), Bi), m.config().alpha / static_cast<double>(ri));
    Variable si = select(m.scales(), 0, static_cast<int64_t>(i));  // scalar or [out]
    term = mul(term, si);
    total = total.defined() ? add(total, term) : term;
    offset += ri;
  }
  return total;
}

}  // namespace

TEST_CASE("multilora: ranks split r over n modules (larger first), or as given") {
  MultiLoraConfig c;
  c.r = 8;
  c.n_modules = 4;
  CHECK(multilora_ranks(c) == std::vector<int64_t>{2, 2, 2, 2});
  c.r = 10;
  c.n_modules = 4;
  CHECK(multilora_ranks(c) == std::vector<int64_t>{3, 3, 2, 2});
  c.ranks = {1, 5};
  CHECK(multilora_ranks(c) == std::vector<int64_t>{1, 5});
  c.ranks = {};
  c.r = 2;
  c.n_modules = 3;
  CHECK(error_of([&] { multilora_ranks(c); }).find("total rank 2 cannot be split over 3") != std::string::npos);
}

TEST_CASE("multilora: init: scales 0 so the output is the base, A and B Kaiming-uniform and nonzero") {
  Generator gen(5);
  MultiLoraConfig c;
  c.r = 8;
  c.n_modules = 4;
  c.alpha = 16;
  Tensor w = random_tensor({20, 30}, 1);
  MultiLoraLinear m(w, Tensor(), c, gen);
  CHECK(m.lora_A().shape() == Shape{8, 30});
  CHECK(m.lora_B().shape() == Shape{20, 8});
  CHECK(m.scales().shape() == Shape{4});
  CHECK(m.scales().requires_grad());
  CHECK(amax(abs(m.scales().data())).item<double>() == 0.0);
  CHECK(amax(abs(m.lora_A().data())).item<double>() <= 1.0 / std::sqrt(30.0));
  CHECK(amax(abs(m.lora_B().data())).item<double>() <= 1.0 / std::sqrt(2.0));  // fan_in = r_i = 2
  CHECK(amax(abs(m.lora_B().data())).item<double>() > 0.1);
  CHECK(m.rank_ratio().to_vector<double>() == std::vector<double>(8, 8.0));
  CHECK(m.rank_module().to_vector<int64_t>() == std::vector<int64_t>{0, 0, 1, 1, 2, 2, 3, 3});
  Tensor x = random_tensor({3, 30}, 2);
  CHECK(max_abs_diff(m.forward(x).data(), linear(x, w)) == 0.0);
  CHECK(m.parameters().size() == 3);

  c.learnable_scale = false;
  c.scale_init = 1.0;
  c.init = MultiLoraInit::gaussian;
  c.scale_mode = MultiLoraScale::per_channel;
  MultiLoraLinear fixed(w, Tensor(), c, gen);
  CHECK(!fixed.scales().requires_grad());
  CHECK(fixed.scales().shape() == Shape{4, 20});
  CHECK(fixed.parameters().size() == 2);
  // Gaussian with std 1 / r_i = 0.5: the sample std of 240 draws is near it.
  double sd = std::sqrt(mean(square(fixed.lora_A().data())).item<double>());
  CHECK(sd == doctest::Approx(0.5).epsilon(0.15));
}

TEST_CASE("multilora: the stacked product equals the per-module sum, forward and backward") {
  for (MultiLoraScale mode : {MultiLoraScale::per_module, MultiLoraScale::per_channel}) {
    Generator gen(9);
    MultiLoraConfig c;
    c.ranks = {3, 1, 2};
    c.alpha = 6;
    c.scale_mode = mode;
    MultiLoraLinear m(random_tensor({9, 7}, 3), random_tensor({9}, 4), c, gen);
    Tensor sdata = m.scales().data();
    sdata.copy_(random_tensor(sdata.shape(), 5));
    Tensor x = random_tensor({2, 5, 7}, 6);
    Tensor g = random_tensor({2, 5, 9}, 7);

    Variable y = m.forward(x);
    Tensor base = linear(x, m.base_weight(), m.base_bias());
    Variable ref = per_module_reference(Variable(x), m);
    CHECK(max_abs_diff(y.data(), base + ref.data()) < 1e-12);

    y.backward(g);
    Tensor gA = m.lora_A().grad().clone(), gB = m.lora_B().grad().clone(), gs = m.scales().grad().clone();
    for (Variable p : m.parameters()) p.zero_grad(true);
    ref.backward(g);
    CHECK(max_abs_diff(gA, m.lora_A().grad()) < 1e-12);
    CHECK(max_abs_diff(gB, m.lora_B().grad()) < 1e-12);
    CHECK(max_abs_diff(gs, m.scales().grad()) < 1e-12);

    // dW = the per-module sum of s_i (alpha / r_i) B_i A_i, as a matrix.
    Tensor eye = zeros({7, 7}, DType::f64);
    for (int64_t i = 0; i < 7; ++i) eye.select(0, i).select(0, i).fill_(1.0);
    Tensor dense = per_module_reference(Variable(eye), m).data().t();  // column j = dW e_j
    CHECK(max_abs_diff(m.delta_weight(), dense) < 1e-12);
  }
}

TEST_CASE("multilora: n = 1, zero-init B and a fixed scale of 1 is LoRA") {
  Tensor w = random_tensor({10, 12}, 11), b = random_tensor({10}, 12);
  LoraConfig lc;
  lc.r = 4;
  lc.alpha = 8;
  Generator g1(77);
  LoraLinear lora(w, b, lc, g1);
  MultiLoraConfig mc;
  mc.r = 4;
  mc.n_modules = 1;
  mc.alpha = 8;
  mc.zero_init_b = true;
  mc.learnable_scale = false;
  mc.scale_init = 1.0;
  Generator g2(77);
  MultiLoraLinear multi(w, b, mc, g2);
  // Same seed, same A; B = 0 in both: identical at init.
  CHECK(max_abs_diff(lora.lora_A().data(), multi.lora_A().data()) == 0.0);
  CHECK(amax(abs(multi.lora_B().data())).item<double>() == 0.0);
  Tensor x = random_tensor({3, 12}, 13);
  CHECK(max_abs_diff(lora.forward(x).data(), multi.forward(x).data()) == 0.0);
  // After B changes (the same values in both), outputs and gradients agree to rounding.
  Tensor bv = random_tensor({10, 4}, 14);
  Tensor lb = lora.lora_B().data(), mb = multi.lora_B().data();
  lb.copy_(bv);
  mb.copy_(bv);
  Variable yl = lora.forward(x), ym = multi.forward(x);
  CHECK(max_abs_diff(yl.data(), ym.data()) < 1e-12);
  Tensor g = random_tensor({3, 10}, 15);
  yl.backward(g);
  ym.backward(g);
  CHECK(max_abs_diff(lora.lora_A().grad(), multi.lora_A().grad()) < 1e-12);
  CHECK(max_abs_diff(lora.lora_B().grad(), multi.lora_B().grad()) < 1e-12);
  CHECK(max_abs_diff(lora.delta_weight(), multi.delta_weight()) < 1e-12);
}

TEST_CASE("multilora: gradcheck in float64 w.r.t. A, B, the scales and x (both scale modes)") {
  for (MultiLoraScale mode : {MultiLoraScale::per_module, MultiLoraScale::per_channel}) {
    Generator gen(21);
    MultiLoraConfig c;
    c.ranks = {2, 1, 3};
    c.alpha = 4;
    c.scale_mode = mode;
    MultiLoraLinear m(random_tensor({5, 6}, 22), Tensor(), c, gen);
    Tensor scales = random_tensor(m.scales().shape(), 23);
    auto r = gradcheck(
        [&](const std::vector<Variable>& in) {
          return std::vector<Variable>{
              multilora_update(in[0], in[1], in[2], in[3], m.rank_ratio(), m.rank_module(), mode)};
        },
        {Variable::leaf(random_tensor({2, 3, 6}, 24)), Variable::leaf(m.lora_A().data().clone()),
         Variable::leaf(m.lora_B().data().clone()), Variable::leaf(scales)});
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("multilora: merge and unmerge") {
  Generator gen(41);
  MultiLoraConfig c;
  c.r = 6;
  c.n_modules = 3;
  c.alpha = 12;
  Tensor w = random_tensor({8, 9}, 42, DType::f32);
  Tensor w_orig = w.clone();
  MultiLoraLinear m(w, Tensor(), c, gen);
  Tensor sdata = m.scales().data();
  sdata.copy_(random_tensor({3}, 43, DType::f32, 0.1));
  Tensor x = random_tensor({4, 9}, 44, DType::f32);
  Tensor y = m.forward(x).data();
  m.merge();
  CHECK(max_abs_diff(m.forward(x).data(), y) < 1e-5);
  m.unmerge();
  CHECK(max_abs_diff(w, w_orig) < 1e-6);
  CHECK(max_abs_diff(m.forward(x).data(), y) < 1e-5);
}

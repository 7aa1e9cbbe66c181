// LoRA as PEFT defines it: init, scaling, dropout, the frozen base, gradcheck, merge/unmerge.
#include <doctest/doctest.h>

#include <cmath>

#include "autograd/gradcheck.h"
#include "multilora/lora.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using mlr::test::error_of;
using mlr::test::random_tensor;

TEST_CASE("lora: PEFT init (A Kaiming-uniform a=sqrt5, B zero) and scaling alpha/r or alpha/sqrt(r)") {
  Generator gen(7);
  Tensor w = random_tensor({24, 40}, 1, DType::f32);
  LoraConfig cfg;
  cfg.r = 8;
  cfg.alpha = 16;
  LoraLinear lora(w, Tensor(), cfg, gen);
  CHECK(lora.scaling() == doctest::Approx(2.0));
  CHECK(lora.lora_A().shape() == Shape{8, 40});
  CHECK(lora.lora_B().shape() == Shape{24, 8});
  // bound = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + 5)) -> 1 / sqrt(fan_in)
  double bound = 1.0 / std::sqrt(40.0);
  Tensor a = lora.lora_A().data();
  CHECK(amax(abs(a)).item<double>() <= bound);
  CHECK(amax(abs(a)).item<double>() > 0.9 * bound);  // 320 uniform draws come near the bound
  CHECK(amax(abs(lora.lora_B().data())).item<double>() == 0.0);
  // Same generator state, same A: the init is a pure function of the seed.
  Generator gen2(7);
  LoraLinear again(w, Tensor(), cfg, gen2);
  CHECK(max_abs_diff(again.lora_A().data(), a) == 0.0);

  cfg.use_rslora = true;
  Generator gen3(7);
  LoraLinear rs(w, Tensor(), cfg, gen3);
  CHECK(rs.scaling() == doctest::Approx(16.0 / std::sqrt(8.0)));
  CHECK(lora.parameters().size() == 2);
}

TEST_CASE("lora: output is the base product at init, base + scaling B A x after, frozen base gets no grad") {
  Generator gen(3);
  Tensor w = random_tensor({6, 5}, 2), b = random_tensor({6}, 3);
  LoraConfig cfg;
  cfg.r = 3;
  cfg.alpha = 6;
  LoraLinear lora(w, b, cfg, gen);
  CHECK(lora.adapter_dtype() == DType::f64);
  Tensor x = random_tensor({2, 4, 5}, 4);
  Tensor base = linear(x, w, b);
  CHECK(max_abs_diff(lora.forward(x).data(), base) == 0.0);

  Tensor bv = random_tensor({6, 3}, 5);
  Tensor bdata = lora.lora_B().data();
  bdata.copy_(bv);
  Variable xv = Variable::leaf(x.clone());
  Variable y = lora.forward(xv);
  Tensor expect = base + mul(matmul(matmul(x, lora.lora_A().data().t()), bv.t()), 2.0);
  CHECK(max_abs_diff(y.data(), expect) < 1e-12);
  y.backward(ones_like(y.data()));
  CHECK(lora.lora_A().grad().defined());
  CHECK(lora.lora_B().grad().defined());
  CHECK(xv.grad().defined());
  // dL/dx = W0^T g + scaling A^T B^T g summed over rows; g = 1
  Tensor g = ones({2, 4, 6}, DType::f64);
  Tensor gx = matmul(g, w) + mul(matmul(matmul(g, bv), lora.lora_A().data()), 2.0);
  CHECK(max_abs_diff(xv.grad(), gx) < 1e-12);
}

TEST_CASE("lora: gradcheck in float64 of the update w.r.t. A, B and x; the layer computes base + update") {
  for (bool rslora : {false, true}) {
    Generator gen(11);
    LoraConfig cfg;
    cfg.r = 3;
    cfg.alpha = 5;
    cfg.use_rslora = rslora;
    LoraLinear lora(random_tensor({7, 5}, 12), random_tensor({7}, 13), cfg, gen);
    Tensor bdata = lora.lora_B().data();
    bdata.copy_(random_tensor({7, 3}, 14));
    const double scaling = lora.scaling();
    auto r = gradcheck(
        [&](const std::vector<Variable>& in) { return std::vector<Variable>{lora_update(in[0], in[1], in[2], scaling)}; },
        {Variable::leaf(random_tensor({2, 3, 5}, 15)), Variable::leaf(lora.lora_A().data().clone()),
         Variable::leaf(bdata.clone())});
    CHECK_MESSAGE(r.ok, r.message);
    Tensor x = random_tensor({4, 5}, 16);
    Tensor expect = linear(x, lora.base_weight(), lora.base_bias()) +
                    lora_update(x, lora.lora_A(), lora.lora_B(), scaling).data();
    CHECK(max_abs_diff(lora.forward(x).data(), expect) == 0.0);
  }
}

TEST_CASE("lora: dropout acts on the adapter input in train mode only, reproducibly from its seed") {
  Generator gen(21);
  LoraConfig cfg;
  cfg.r = 4;
  cfg.alpha = 4;
  cfg.dropout = 0.5;
  cfg.dropout_seed = 99;
  Tensor w = random_tensor({8, 16}, 22);
  LoraLinear lora(w, Tensor(), cfg, gen);
  Tensor bdata = lora.lora_B().data();
  bdata.copy_(random_tensor({8, 4}, 23));
  Tensor x = random_tensor({32, 16}, 24);
  Tensor base = linear(x, w);
  Tensor full_update = matmul(matmul(x, lora.lora_A().data().t()), lora.lora_B().data().t());

  lora.train(false);
  CHECK(max_abs_diff(lora.forward(x).data(), base + full_update) < 1e-12);
  lora.train(true);
  Tensor y1 = lora.forward(x).data();
  Tensor y2 = lora.forward(x).data();
  CHECK(max_abs_diff(y1, base + full_update) > 1e-3);  // masked
  CHECK(max_abs_diff(y1, y2) > 1e-3);                  // a fresh mask per call

  // The same seed replays the same masks; the base product never sees dropout.
  Generator gen_b(21);
  LoraLinear replay(w, Tensor(), cfg, gen_b);
  Tensor rdata = replay.lora_B().data();
  rdata.copy_(lora.lora_B().data());
  CHECK(max_abs_diff(replay.forward(x).data(), y1) == 0.0);
  // Masked input rows: each element is either 0 or x / (1 - p), about half of them kept.
  Generator mg(5);
  Tensor dropped = adapter_dropout(Variable(x), 0.5, mg).data();
  Tensor kept = ne(dropped, 0.0);
  double frac = mean(cast(kept, DType::f64)).item<double>();
  CHECK(frac > 0.4);
  CHECK(frac < 0.6);
  CHECK(max_abs_diff(where(kept, mul(x, 2.0), 0.0), dropped) == 0.0);
  CHECK(error_of([&] { adapter_dropout(Variable(x), 1.0, mg); }).find("outside [0, 1)") != std::string::npos);
}

TEST_CASE("lora: merge adds scaling B A into W0 (in its storage), unmerge restores it") {
  for (DType dt : {DType::f32, DType::bf16}) {
    Generator gen(31);
    LoraConfig cfg;
    cfg.r = 4;
    cfg.alpha = 8;
    Tensor w = cast(random_tensor({12, 10}, 32, DType::f32), dt);
    Tensor w_orig = w.clone();
    LoraLinear lora(w, Tensor(), cfg, gen);
    Tensor bdata = lora.lora_B().data();
    bdata.copy_(random_tensor({12, 4}, 33, DType::f32, 0.1));
    lora.train(false);
    Tensor x = cast(random_tensor({5, 10}, 34, DType::f32), dt);
    Tensor y_adapted = lora.forward(x).data();
    lora.merge();
    CHECK(lora.merged());
    // W0's own storage changed (a model sharing it sees the merged weight).
    Tensor expect = cast(cast(w_orig, DType::f32) + lora.delta_weight(), dt);
    CHECK(max_abs_diff(cast(w, DType::f32), cast(expect, DType::f32)) == 0.0);
    Tensor y_merged = lora.forward(x).data();
    double tol = dt == DType::f32 ? 1e-5 : 0.1;  // bf16 rounds W0 + dW once
    CHECK(max_abs_diff(cast(y_merged, DType::f32), cast(y_adapted, DType::f32)) < tol);
    CHECK(error_of([&] { lora.merge(); }).find("already merged") != std::string::npos);
    lora.unmerge();
    CHECK(!lora.merged());
    double wtol = dt == DType::f32 ? 1e-6 : 0.02;  // one bf16 ulp of |w| ~ 3
    CHECK(max_abs_diff(cast(w, DType::f32), cast(w_orig, DType::f32)) < wtol);
    CHECK(error_of([&] { lora.unmerge(); }).find("not merged") != std::string::npos);
  }
}

TEST_CASE("lora: bad shapes and configs are errors that name the values") {
  Generator gen(1);
  LoraConfig cfg;
  CHECK(error_of([&] { LoraLinear(zeros({3}), Tensor(), cfg, gen); }).find("[3]") != std::string::npos);
  CHECK(error_of([&] { LoraLinear(zeros({3, 4}), zeros({5}), cfg, gen); }).find("bias shape [5]") !=
        std::string::npos);
  cfg.r = 0;
  CHECK(error_of([&] { LoraLinear(zeros({3, 4}), Tensor(), cfg, gen); }).find("rank must be positive, got 0") !=
        std::string::npos);
  cfg.r = 2;
  LoraLinear ok(zeros({3, 4}), Tensor(), cfg, gen);
  CHECK(error_of([&] { ok.forward(zeros({2, 5})); }).find("[2, 5] does not end in 4") != std::string::npos);
}

// SMoRA: top-k selection by score + bias, gates, gradcheck with a fixed selection, load balancing,
// load statistics, and the refusal to merge.
#include <doctest/doctest.h>

#include <numeric>

#include "autograd/gradcheck.h"
#include "multilora/smora.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using mlr::test::error_of;
using mlr::test::random_tensor;

TEST_CASE("smora: selects the top-k ranks of score + bias per token; gates sum to gate_scale") {
  Generator gen(3);
  SmoraConfig c;
  c.r = 6;
  c.top_k = 2;
  c.alpha = 4;
  SmoraLinear sm(random_tensor({5, 8}, 1), Tensor(), c, gen);
  Tensor x = random_tensor({4, 3, 8}, 2);
  Tensor s = sm.scores(x).data();
  CHECK(s.shape() == Shape{4, 3, 6});
  CHECK(max_abs_diff(s, sigmoid(linear(x, sm.router().data()))) == 0.0);
  Tensor sel = sm.select_ranks(s);
  CHECK(sel.dtype() == DType::boolean);
  CHECK(sel.shape() == s.shape());
  // Exactly k per token, and every selected score >= every unselected one (bias is 0 here).
  std::vector<double> sv = s.to_vector<double>();
  std::vector<bool> mask;
  for (double v : cast(sel, DType::f64).to_vector<double>()) mask.push_back(v != 0.0);
  for (size_t t = 0; t < 12; ++t) {
    int picked = 0;
    double min_sel = 1e9, max_unsel = -1e9;
    for (size_t j = 0; j < 6; ++j) {
      if (mask[t * 6 + j]) {
        ++picked;
        min_sel = std::min(min_sel, sv[t * 6 + j]);
      } else {
        max_unsel = std::max(max_unsel, sv[t * 6 + j]);
      }
    }
    CHECK(picked == 2);
    CHECK(min_sel >= max_unsel);
  }
  // Gates: B := I-like readout to see g o (A x); check through the update with B = 1 column sums.
  Tensor A = sm.lora_A().data();
  Tensor B = random_tensor({5, 6}, 3);
  Tensor upd = smora_update(Variable(x), Variable(A), Variable(B), Variable(s), sel, 4.0).data();
  Tensor kept = mul(s, cast(sel, DType::f64));
  Tensor gates = mul(div(kept, sum(kept, {-1}, true)), 4.0);
  CHECK(max_abs_diff(sum(gates, {-1}), full({4, 3}, 4.0, DType::f64)) < 1e-12);
  CHECK(max_abs_diff(upd, matmul(mul(matmul(x, A.t()), gates), B.t())) < 1e-12);

  // The bias changes the selection: a large bias on rank 5 puts it in every token's top k.
  Tensor bias = sm.selection_bias();
  bias.select(0, 5).fill_(10.0);
  Tensor sel_b = cast(sm.select_ranks(s), DType::f64);
  CHECK(sum(sel_b.select(-1, 5)).item<double>() == 12.0);
  CHECK(sum(sel_b).item<double>() == 24.0);
  // ...but not the gate values, which come from the scores alone.
  Tensor sel_b_bool = sm.select_ranks(s);
  Tensor kept_b = mul(s, sel_b);
  Tensor gates_b = div(kept_b, sum(kept_b, {-1}, true));
  Tensor upd_b = smora_update(Variable(x), Variable(A), Variable(B), Variable(s), sel_b_bool, 1.0).data();
  CHECK(max_abs_diff(upd_b, matmul(mul(matmul(x, A.t()), gates_b), B.t())) < 1e-12);
}

TEST_CASE("smora: softmax scores; forward = base + update of the top-k selection; ties go to the lower rank") {
  Generator gen(5);
  SmoraConfig c;
  c.r = 4;
  c.top_k = 3;
  c.alpha = 2;
  c.gate_scale = 0.5;
  c.score = SmoraScore::softmax;
  SmoraLinear sm(random_tensor({3, 6}, 4), random_tensor({3}, 5), c, gen);
  Tensor bdata = sm.lora_B().data();
  bdata.copy_(random_tensor({3, 4}, 6));
  Tensor x = random_tensor({5, 6}, 7);
  Tensor s = sm.scores(x).data();
  CHECK(max_abs_diff(sum(s, {-1}), ones({5}, DType::f64)) < 1e-12);
  Tensor sel = sm.select_ranks(s);
  Tensor expect = linear(x, sm.base_weight(), sm.base_bias()) +
                  smora_update(x, sm.lora_A(), sm.lora_B(), Variable(s), sel, 0.5).data();
  CHECK(max_abs_diff(sm.forward(x).data(), expect) == 0.0);
  CHECK(max_abs_diff(sm.forward_with_selection(x, sel).data(), expect) == 0.0);
  // Another selection gives another output (the mask is used, not recomputed).
  Tensor other = logical_not(sel);
  Tensor other_expect = linear(x, sm.base_weight(), sm.base_bias()) +
                        smora_update(x, sm.lora_A(), sm.lora_B(), Variable(s), other, 0.5).data();
  CHECK(max_abs_diff(sm.forward_with_selection(x, other).data(), other_expect) == 0.0);
  CHECK(max_abs_diff(other_expect, expect) > 1e-6);
  // All-equal scores: the k lowest ranks win.
  Tensor tie = full({1, 4}, 0.25, DType::f64);
  CHECK(cast(sm.select_ranks(tie), DType::i64).to_vector<int64_t>() == std::vector<int64_t>{1, 1, 1, 0});
}

TEST_CASE("smora: gradcheck in float64 w.r.t. x, A, B and the router, selection fixed") {
  for (SmoraScore score : {SmoraScore::sigmoid, SmoraScore::softmax}) {
    Generator gen(8);
    SmoraConfig c;
    c.r = 5;
    c.top_k = 2;
    c.score = score;
    SmoraLinear sm(random_tensor({4, 6}, 9), Tensor(), c, gen);
    Tensor x = random_tensor({2, 3, 6}, 10);
    Tensor selected = sm.select_ranks(sm.scores(x).data());
    auto r = gradcheck(
        [&](const std::vector<Variable>& in) {
          Variable s = smora_scores(in[0], in[3], score);
          return std::vector<Variable>{smora_update(in[0], in[1], in[2], s, selected, 3.0)};
        },
        {Variable::leaf(x), Variable::leaf(sm.lora_A().data().clone()), Variable::leaf(random_tensor({4, 5}, 11)),
         Variable::leaf(sm.router().data().clone())});
    CHECK_MESSAGE(r.ok, r.message);
  }
}

TEST_CASE("smora: training counts loads; update_load_balance moves the bias by u * sign(mean - count)") {
  Generator gen(12);
  SmoraConfig c;
  c.r = 4;
  c.top_k = 1;
  c.bias_update_rate = 0.25;
  SmoraLinear sm(random_tensor({3, 5}, 13), Tensor(), c, gen);
  Tensor x = random_tensor({40, 5}, 14);
  sm.train(false);
  sm.forward(x);
  CHECK(sm.load_stats().step_counts == std::vector<int64_t>(4, 0));  // eval: nothing counted
  sm.train(true);
  sm.forward(x);
  SmoraLoadStats st = sm.load_stats();
  std::vector<double> expect_counts = sum(cast(sm.select_ranks(sm.scores(x).data()), DType::f64), {0}).to_vector<double>();
  for (size_t i = 0; i < 4; ++i) CHECK(st.step_counts[i] == static_cast<int64_t>(expect_counts[i]));
  CHECK(std::accumulate(st.step_counts.begin(), st.step_counts.end(), int64_t{0}) == 40);
  sm.update_load_balance();
  SmoraLoadStats after = sm.load_stats();
  CHECK(after.step_counts == std::vector<int64_t>(4, 0));
  CHECK(after.total_counts == st.step_counts);
  for (size_t i = 0; i < 4; ++i) {
    double d = 10.0 - static_cast<double>(st.step_counts[i]);
    double expect = d > 0 ? 0.25 : (d < 0 ? -0.25 : 0.0);
    CHECK(after.bias[i] == doctest::Approx(expect));
    CHECK(after.load_fraction[i] == doctest::Approx(st.step_counts[i] / 40.0));
  }
  double mx = *std::max_element(st.step_counts.begin(), st.step_counts.end());
  CHECK(after.max_over_mean == doctest::Approx(mx / 10.0));

  // Repeated steps on the same tokens drive the loads toward balance (the default u = 1e-5 is for
  // real training; here u = 0.25 moves the selection visibly within a few steps).
  // Repeated steps on the same tokens drive the loads toward balance (the default u = 1e-5 is for
  // real training; here u = 0.25 moves the selection visibly within a few steps). Sign updates
  // oscillate around balance, so compare the spread of step 0 with that of the average over steps
  // 20..39.
  auto spread = [](const std::vector<double>& v) {
    return *std::max_element(v.begin(), v.end()) - *std::min_element(v.begin(), v.end());
  };
  std::vector<double> first, late(4, 0.0);
  for (int step = 0; step < 40; ++step) {
    sm.forward(x);
    std::vector<int64_t> counts = sm.load_stats().step_counts;
    if (step == 0) first.assign(counts.begin(), counts.end());
    if (step >= 20)
      for (size_t i = 0; i < 4; ++i) late[i] += static_cast<double>(counts[i]) / 20.0;
    sm.update_load_balance();
  }
  MESSAGE("smora balance (u = 0.25): step-0 counts " << first[0] << " " << first[1] << " " << first[2] << " "
                                                     << first[3] << "; mean counts over steps 20..39 " << late[0]
                                                     << " " << late[1] << " " << late[2] << " " << late[3]);
  CHECK(spread(late) < 0.5 * spread(first));
}

TEST_CASE("smora: the trainer's hooks through AdaptedLinear: after-step update, checkpoint state, step metrics") {
  Generator gen(15);
  SmoraConfig c;
  c.r = 4;
  c.top_k = 2;
  c.bias_update_rate = 0.5;
  std::unique_ptr<AdaptedLinear> adapter = c.make_adapter(random_tensor({3, 5}, 16), Tensor(), gen, 7);
  CHECK(&adapter->type() == &smora_adapter_type());
  adapter->train(true);
  adapter->forward(random_tensor({30, 5}, 17));
  adapter->after_optimizer_step();  // the load-balancing update: counts move into the totals
  const auto& sm = dynamic_cast<const SmoraLinear&>(*adapter);
  const SmoraLoadStats st = sm.load_stats();
  CHECK(std::accumulate(st.total_counts.begin(), st.total_counts.end(), int64_t{0}) == 60);
  CHECK(adapter->training_state_key() == "smora_total_counts");
  CHECK(adapter->training_state() == nlohmann::json(st.total_counts));
  const std::vector<AdaptedLinear::Metric> metrics = adapter->step_metrics();
  REQUIRE(metrics.size() == 2);
  CHECK(metrics[0].name == "smora_max_over_mean_load");
  CHECK(metrics[0].value == doctest::Approx(st.max_over_mean));
  CHECK(metrics[0].tensorboard_tag == "smora/max_over_mean_load");
  CHECK(metrics[1].name == "smora_load_cv");
  CHECK(metrics[1].value == doctest::Approx(st.coefficient_of_variation));
  // A fresh adapter restores the totals from the checkpoint's JSON; malformed state is an error.
  Generator gen2(15);
  std::unique_ptr<AdaptedLinear> resumed = c.make_adapter(random_tensor({3, 5}, 16), Tensor(), gen2, 7);
  resumed->restore_training_state(adapter->training_state());
  CHECK(dynamic_cast<const SmoraLinear&>(*resumed).total_counts() == st.total_counts);
  CHECK(error_of([&] { resumed->restore_training_state(nlohmann::json{{"counts", 1}}); })
            .find("the saved load counts are {\"counts\":1}, expected an array") != std::string::npos);
  CHECK(error_of([&] { resumed->restore_training_state(nlohmann::json{1, 2}); })
            .find("2 load counts given for 4 ranks") != std::string::npos);
}

TEST_CASE("smora: merging is refused with a reason; bad configs and masks are errors") {
  Generator gen(1);
  SmoraConfig c;
  c.r = 4;
  c.top_k = 2;
  SmoraLinear sm(random_tensor({3, 5}, 2), Tensor(), c, gen);
  std::string e = error_of([&] { sm.merge(); });
  CHECK(e.find("depends on the input") != std::string::npos);
  CHECK(!sm.merged());
  c.top_k = 5;
  CHECK(error_of([&] { SmoraLinear(random_tensor({3, 5}, 2), Tensor(), c, gen); }).find("top_k 5 must be in [1, r = 4]") !=
        std::string::npos);
  Tensor x = random_tensor({2, 5}, 3);
  Variable s = sm.scores(x);
  CHECK(error_of([&] { smora_update(x, sm.lora_A(), sm.lora_B(), s, zeros({2, 4}), 1.0); })
            .find("selection mask must be bool [2, 4]") != std::string::npos);
  CHECK(sm.parameters().size() == 3);  // A, B, router; the bias is not a gradient parameter
}

// AdamW beyond the torch fixture: the update formula in f64 against the textbook algorithm,
// master weights for bf16/f16 parameters, parameter groups and their weight-decay rules, state
// round-trips (bit-identical continuation) and error messages.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <array>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>

#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/lr_schedule.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {


bool bit_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  const Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

}  // namespace

TEST_CASE("AdamW in f64 follows the algorithm of Loshchilov & Hutter with torch's bias correction") {
  // Reference, written from the algorithm independently of the kernel's op order:
  //   p <- p - lr * wd * p;  m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2
  //   p <- p - lr * (m / (1 - b1^t)) / (sqrt(v) / sqrt(1 - b2^t) + eps)     (torch's eps placement)
  Generator gen(3);
  const AdamWOptions o{0.01, 0.85, 0.98, 1e-7, 0.05};
  Variable p = Variable::leaf(randn({5, 4}, gen, DType::f64), true, "p");
  std::vector<double> ref = p.data().to_vector<double>();
  std::vector<double> m(ref.size(), 0.0), v(ref.size(), 0.0);
  AdamW opt({p}, o);
  for (int t = 1; t <= 6; ++t) {
    const Tensor g = randn({5, 4}, gen, DType::f64) * (t % 2 ? 0.1 : 3.0);
    p.set_grad(g);
    opt.step();
    const std::vector<double> gv = g.to_vector<double>();
    for (size_t k = 0; k < ref.size(); ++k) {
      ref[k] -= o.lr * o.weight_decay * ref[k];
      m[k] = o.beta1 * m[k] + (1 - o.beta1) * gv[k];
      v[k] = o.beta2 * v[k] + (1 - o.beta2) * gv[k] * gv[k];
      const double m_hat = m[k] / (1 - std::pow(o.beta1, t));
      const double denom = std::sqrt(v[k]) / std::sqrt(1 - std::pow(o.beta2, t)) + o.eps;
      ref[k] -= o.lr * m_hat / denom;
    }
    const std::vector<double> got = p.data().to_vector<double>();
    for (size_t k = 0; k < ref.size(); ++k) CHECK(got[k] == doctest::Approx(ref[k]).epsilon(1e-13));
  }
  CHECK(opt.step_count(0, 0) == 6);
  CHECK(opt.master_weights(0, 0).shares_storage(p.data()));  // f64/f32: the parameter is the master
}

TEST_CASE("bf16 and f16 parameters: f32 master weights, cast back once per step") {
  for (DType low : {DType::bf16, DType::f16}) {
    INFO("dtype ", dtype_name(low));
    Generator gen(11);
    // Values representable in the low dtype, so both runs start from the same point.
    const Tensor init = randn({3, 7}, gen).to(low).to(DType::f32);
    Variable ref = Variable::leaf(init.clone(), true, "w");
    Variable lowp = Variable::leaf(init.to(low), true, "w");
    const AdamWOptions o{1e-2, 0.9, 0.999, 1e-8, 0.1};
    AdamW ref_opt({ref}, o);
    AdamW low_opt({lowp}, o);
    CHECK_FALSE(low_opt.master_weights(0, 0).defined());  // created at the first step
    for (int t = 0; t < 5; ++t) {
      const Tensor g = randn({3, 7}, gen).to(low);  // a low-precision gradient, as backward gives
      ref.set_grad(g.to(DType::f32));
      lowp.set_grad(g);
      ref_opt.step();
      low_opt.step();
      const Tensor master = low_opt.master_weights(0, 0);
      REQUIRE(master.dtype() == DType::f32);
      CHECK_FALSE(master.shares_storage(lowp.data()));
      // The master weights follow the f32 trajectory exactly; the parameter is their rounding.
      CHECK(bit_equal(master, ref.data()));
      CHECK(bit_equal(lowp.data(), ref.data().to(low)));
      CHECK(lowp.dtype() == low);
    }
  }
}

TEST_CASE("bf16 parameters: updates smaller than a bf16 ulp accumulate in the master weights") {
  // 1.0 in bf16 has an ulp of 2^-7; Adam's first step moves a parameter by about lr.
  const double lr = 1e-3;
  Variable w = Variable::leaf(ones({4}, DType::bf16), true, "w");
  AdamW opt({w}, {lr, 0.9, 0.999, 1e-8, 0.0});
  int steps_until_change = 0;
  for (int t = 1; t <= 20 && steps_until_change == 0; ++t) {
    w.set_grad(ones({4}, DType::bf16));
    opt.step();
    const float master = opt.master_weights(0, 0).to_vector<float>()[0];
    CHECK(master == doctest::Approx(1.0 - lr * t).epsilon(1e-5));  // constant gradient: each step moves lr
    const float param = w.data().to_vector<float>()[0];
    CHECK(param == static_cast<float>(bf16(master)));
    if (param != 1.0f) steps_until_change = t;
  }
  // 1 - t * 1e-3 rounds away from 1.0 in bf16 once t * 1e-3 > 2^-9 (half an ulp below 1.0 is
  // 2^-9 since the ulp below 1 is 2^-8): t = 2. A pure-bf16 update would never move.
  CHECK(steps_until_change == 2);
  bf16 pure(1.0f);
  pure = bf16(static_cast<float>(pure) - static_cast<float>(lr));
  CHECK(static_cast<float>(pure) == 1.0f);
}

TEST_CASE("make_param_groups: no weight decay on biases, norms and scales unless asked") {
  // Full names as Module::named_parameters gives them; the Variables carry only local names.
  auto named = [](const std::string& name, bool trainable = true) {
    return std::pair<std::string, Variable>{name, Variable::leaf(zeros({2}), trainable, "weight")};
  };
  const std::vector<std::pair<std::string, Variable>> params = {
      named("model.layers.0.self_attn.q_proj.weight"),
      named("model.layers.0.self_attn.q_proj.bias"),
      named("model.layers.0.input_layernorm.weight"),
      named("model.norm.weight"),
      named("model.layers.0.self_attn.q_proj.lora_A.default.weight"),
      named("model.layers.0.self_attn.q_proj.lora_scale"),
      named("model.layers.0.mlp.up_proj.multilora.scales"),
      named("model.embed_tokens.weight", /*trainable=*/false),
      named("lm_head.weight"),
      named("scale"),
      named("model.layers.0.mlp.upscale_proj.weight"),  // "scale" inside a word is not a scale
  };
  const AdamWOptions o{2e-4, 0.9, 0.95, 1e-8, 0.1};
  const auto groups = make_param_groups(params, o);
  REQUIRE(groups.size() == 2);
  CHECK(groups[0].name == "decay");
  CHECK(groups[0].options.weight_decay == 0.1);
  CHECK(groups[1].name == "no_decay");
  CHECK(groups[1].options.weight_decay == 0.0);
  CHECK(groups[1].options.lr == 2e-4);
  CHECK(groups[1].options.beta2 == 0.95);
  REQUIRE(groups[0].names.size() == groups[0].params.size());
  CHECK(groups[0].params[1].is_same(params[4].second));
  auto names = [](const ParamGroup& g) { return g.names; };
  CHECK(names(groups[0]) == std::vector<std::string>{"model.layers.0.self_attn.q_proj.weight",
                                                     "model.layers.0.self_attn.q_proj.lora_A.default.weight",
                                                     "lm_head.weight", "model.layers.0.mlp.upscale_proj.weight"});
  CHECK(names(groups[1]) == std::vector<std::string>{
                                "model.layers.0.self_attn.q_proj.bias", "model.layers.0.input_layernorm.weight",
                                "model.norm.weight", "model.layers.0.self_attn.q_proj.lora_scale",
                                "model.layers.0.mlp.up_proj.multilora.scales", "scale"});

  // Asked to decay everything: one group.
  const auto all = make_param_groups(params, o, NoDecayRules{{}});
  REQUIRE(all.size() == 1);
  CHECK(all[0].params.size() == 10);

  CHECK_ERROR_CONTAINS(make_param_groups({{"", Variable::leaf(zeros({2}))}}, o), "has an empty name");
  CHECK_ERROR_CONTAINS(make_param_groups({named("a"), named("a")}, o), "two parameters are named 'a'");
  CHECK_ERROR_CONTAINS(make_param_groups({named("a")}, o, NoDecayRules{{"(unclosed"}}), "invalid pattern \"(unclosed\"");

  // The groups feed AdamW, keyed by the full names: a no-decay parameter with zero gradient
  // does not move, a decayed one shrinks.
  AdamW opt(groups);
  CHECK(opt.key(1, 0) == "model.layers.0.self_attn.q_proj.bias");
  Variable bias = groups[1].params[0];
  bias.set_data(full({2}, 3.0));
  bias.set_grad(zeros({2}));
  Variable weight = groups[0].params[0];
  weight.set_data(full({2}, 3.0));
  weight.set_grad(zeros({2}));
  opt.step();
  CHECK(bias.data().to_vector<float>() == std::vector<float>{3.f, 3.f});
  CHECK(weight.data().to_vector<float>()[0] == static_cast<float>(3.0f * static_cast<float>(1.0 - 2e-4 * 0.1)));
}

TEST_CASE("AdamW state: save, restore into fresh parameters, identical continuation") {
  Generator gen(5);
  const Tensor w_init = randn({4, 3}, gen);
  const Tensor e_init = randn({6}, gen).to(DType::bf16);
  const Tensor n_init = randn({3}, gen);
  // Gradients for 9 steps; "n" has none at step 1 (skipped, its step count lags).
  std::vector<std::array<Tensor, 3>> grads;
  for (int t = 0; t < 9; ++t) {
    grads.push_back({randn({4, 3}, gen), randn({6}, gen).to(DType::bf16), t == 1 ? Tensor() : randn({3}, gen)});
  }
  const LrSchedule schedule{LrScheduleKind::cosine, 1.0, 2, 9, 0.1};

  struct Run {
    Variable w, e, n;
    std::unique_ptr<AdamW> opt;
  };
  auto make_run = [](const Tensor& w, const Tensor& e, const Tensor& n) {
    Run r{Variable::leaf(w.clone(), true, "w"), Variable::leaf(e.clone(), true, "e"),
          Variable::leaf(n.clone(), true, "n.bias"), nullptr};
    r.opt = std::make_unique<AdamW>(std::vector<ParamGroup>{
        {"decay", {r.w, r.e}, {1e-2, 0.9, 0.999, 1e-8, 0.1}}, {"no_decay", {r.n}, {2e-2, 0.8, 0.99, 1e-6, 0.0}}});
    return r;
  };
  auto do_step = [&](Run& r, int t) {
    r.w.set_grad(grads[t][0]);
    r.e.set_grad(grads[t][1]);
    r.n.set_grad(grads[t][2]);
    r.opt->set_lr_factor(schedule.factor(t));
    r.opt->step();
  };

  Run straight = make_run(w_init, e_init, n_init);
  for (int t = 0; t < 4; ++t) do_step(straight, t);
  const TrainingState saved = straight.opt->state_dict();
  // What a checkpoint holds besides the optimizer: the parameters themselves.
  const Tensor w_saved = straight.w.data().clone(), e_saved = straight.e.data().clone(),
               n_saved = straight.n.data().clone();
  for (int t = 4; t < 9; ++t) do_step(straight, t);

  CHECK(saved.tensors.size() == 7);  // 3 x (exp_avg, exp_avg_sq) + e.master
  CHECK(saved.tensors.count("e.master") == 1);
  CHECK(saved.tensors.count("w.master") == 0);
  CHECK(saved.scalars.at("state").at("n.bias").at("step") == 3);
  CHECK(saved.scalars.at("state").at("w").at("step") == 4);
  CHECK(saved.scalars.at("groups").at(1).at("params") == nlohmann::json::array({"n.bias"}));

  // Resume through JSON text (as a checkpoint file would) into fresh parameters. The bf16
  // parameter is restored from the master weights, so even a perturbed value is overwritten.
  Run resumed = make_run(w_saved, e_saved, n_saved);
  Tensor perturbed = resumed.e.data();
  perturbed.fill_(0.0);
  TrainingState reloaded{saved.tensors, nlohmann::json::parse(saved.scalars.dump())};
  resumed.opt->load_state_dict(reloaded);
  CHECK(bit_equal(resumed.e.data(), e_saved));
  CHECK(resumed.opt->step_count(1, 0) == 3);
  CHECK(resumed.opt->lr_factor() == schedule.factor(3));
  for (int t = 4; t < 9; ++t) do_step(resumed, t);

  CHECK(bit_equal(resumed.w.data(), straight.w.data()));
  CHECK(bit_equal(resumed.e.data(), straight.e.data()));
  CHECK(bit_equal(resumed.n.data(), straight.n.data()));
  const TrainingState a = straight.opt->state_dict(), b = resumed.opt->state_dict();
  CHECK(a.scalars == b.scalars);
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (const auto& [name, t] : a.tensors) CHECK_MESSAGE(bit_equal(t, b.tensors.at(name)), name);

  // The saved state is a snapshot: the steps after it did not change it.
  CHECK_FALSE(bit_equal(saved.tensors.at("w.exp_avg"), a.tensors.at("w.exp_avg")));
}

TEST_CASE("AdamW state: mismatches are reported and leave the optimizer unchanged") {
  Variable w = Variable::leaf(ones({2, 2}), true, "w");
  Variable b = Variable::leaf(ones({2}, DType::bf16), true, "b");
  AdamW opt({w, b}, AdamWOptions{});
  w.set_grad(ones({2, 2}));
  b.set_grad(ones({2}, DType::bf16));
  opt.step();
  const TrainingState good = opt.state_dict();

  auto with = [&](auto edit) {
    TrainingState s = good;
    edit(s);
    return s;
  };
  CHECK_ERROR_CONTAINS(opt.load_state_dict(with([](TrainingState& s) { s.tensors.erase("b.master"); })),
                       "tensor 'b.master' is missing");
  CHECK_ERROR_CONTAINS(opt.load_state_dict(with([](TrainingState& s) { s.tensors["w.exp_avg"] = zeros({4}); })),
                       "tensor 'w.exp_avg' is f32 [4], expected f32 [2, 2]");
  CHECK_ERROR_CONTAINS(
      opt.load_state_dict(with([](TrainingState& s) { s.tensors["b.exp_avg"] = zeros({2}, DType::bf16); })),
      "tensor 'b.exp_avg' is bf16 [2], expected f32 [2] for a bf16 parameter");
  CHECK_ERROR_CONTAINS(
      opt.load_state_dict(with([](TrainingState& s) { s.scalars["groups"][0]["params"][1] = "bias"; })),
      "parameter 1 is 'bias' in the saved state but 'b' here");
  CHECK_ERROR_CONTAINS(opt.load_state_dict(with([](TrainingState& s) { s.scalars["state"]["x"] = {{"step", 1}}; })),
                       "state for 'x', which is not a parameter");
  CHECK_ERROR_CONTAINS(opt.load_state_dict(with([](TrainingState& s) { s.scalars["format"] = "torch"; })),
                       "format \"torch\"");
  CHECK_ERROR_CONTAINS(opt.load_state_dict(with([](TrainingState& s) { s.scalars["groups"][0]["beta2"] = 1.0; })),
                       "beta2 must lie in [0, 1)");
  CHECK_ERROR_CONTAINS(opt.load_state_dict(with([](TrainingState& s) { s.scalars.erase("lr_factor"); })),
                       "missing field \"lr_factor\"");
  CHECK_ERROR_CONTAINS(
      opt.load_state_dict(with([](TrainingState& s) { s.scalars["state"]["w"]["step"] = 0; })), "step 0");

  // Nothing of the failed loads stuck.
  const TrainingState after = opt.state_dict();
  CHECK(after.scalars == good.scalars);
  for (const auto& [name, t] : good.tensors) CHECK(bit_equal(t, after.tensors.at(name)));

  // A state without an entry for a parameter resets it (it never stepped when saved).
  TrainingState partial = good;
  partial.scalars["state"].erase("w");
  opt.load_state_dict(partial);
  CHECK(opt.step_count(0, 0) == 0);
  CHECK_FALSE(opt.master_weights(0, 0).defined());
  CHECK(opt.step_count(0, 1) == 1);
}

TEST_CASE("AdamW: construction and step errors") {
  Variable a = Variable::leaf(ones({2}), true, "a");
  CHECK_ERROR_CONTAINS(AdamW({a, a}, AdamWOptions{}), "parameter 'a' appears twice");
  CHECK_ERROR_CONTAINS(AdamW(std::vector<ParamGroup>{}), "no parameter groups");
  CHECK_ERROR_CONTAINS(AdamW({a}, AdamWOptions{1e-3, 1.0, 0.999, 1e-8, 0.0}), "beta1 must lie in [0, 1)");
  CHECK_ERROR_CONTAINS(AdamW({a}, AdamWOptions{-1e-3, 0.9, 0.999, 1e-8, 0.0}), "lr must be >= 0");
  CHECK_ERROR_CONTAINS(AdamW({Variable::leaf(ones({2}), false, "frozen")}, AdamWOptions{}),
                       "'frozen' is not a leaf that requires grad");
  CHECK_ERROR_CONTAINS(AdamW({Variable::leaf(ones({2}), true, "x"), Variable::leaf(ones({2}), true, "x")},
                             AdamWOptions{}),
                       "two parameters have the state key 'x'");
  // Unnamed parameters get positional keys; group names override Variable names.
  AdamW unnamed({Variable::leaf(ones({2})), Variable::leaf(ones({3}))}, AdamWOptions{});
  CHECK(unnamed.key(0, 1) == "group0.param1");
  AdamW renamed(std::vector<ParamGroup>{{"g", {a}, AdamWOptions{}, {"model.a.weight"}}});
  CHECK(renamed.key(0, 0) == "model.a.weight");
  CHECK_ERROR_CONTAINS(AdamW(std::vector<ParamGroup>{{"g", {a}, AdamWOptions{}, {"x", "y"}}}),
                       "group 'g' has 1 parameters but 2 names");

  Variable t = Variable::leaf(ones({3, 2}).t(), true, "transposed");
  AdamW opt({t}, AdamWOptions{});
  t.set_grad(ones({2, 3}));
  CHECK_ERROR_CONTAINS(opt.step(), "parameter 'transposed' (shape [2, 3]) is not contiguous");
  CHECK_ERROR_CONTAINS(opt.set_lr_factor(-0.5), "lr factor must be >= 0");

  // A parameter without gradient is skipped: no state, values untouched.
  Variable idle = Variable::leaf(ones({2}), true, "idle");
  AdamW idle_opt({idle}, AdamWOptions{});
  idle_opt.step();
  CHECK(idle_opt.step_count(0, 0) == 0);
  CHECK(idle.data().to_vector<float>() == std::vector<float>{1.f, 1.f});
}

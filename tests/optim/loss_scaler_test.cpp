// fp16 dynamic loss scaling: scaling, unscaling, skipped steps, backoff, growth and state.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <cmath>
#include <limits>
#include <string>

#include "autograd/functions.h"
#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/loss_scaler.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {


}  // namespace

TEST_CASE("loss scaler: scaled backward, unscaled gradients equal the true ones") {
  // An f16 parameter feeding an f32 loss: the gradient reaching the parameter is cast to f16,
  // where 2^-30 flushes to zero; scaled by 2^16 it survives, and unscaling writes it in f32.
  Variable w = Variable::leaf(ones({3}, DType::f16), true, "w");
  const double tiny = std::ldexp(1.0, -30);
  AdamW opt({w}, AdamWOptions{1e-3, 0.9, 0.999, 1e-8, 0.0});
  DynamicLossScaler scaler;  // scale 2^16
  CHECK(scaler.scale() == 65536.0);
  auto loss_of = [&] { return sum(mul(w.to(DType::f32), tiny)); };

  loss_of().backward();
  CHECK(w.grad().to_vector<float>()[0] == 0.f);  // underflow without scaling
  w.zero_grad();

  scaler.scale_loss(loss_of()).backward();
  REQUIRE(w.grad().dtype() == DType::f16);
  CHECK(w.grad().to_vector<float>()[0] == static_cast<float>(std::ldexp(1.0, -14)));
  scaler.unscale_(opt);
  CHECK_FALSE(scaler.found_inf());
  REQUIRE(w.grad().dtype() == DType::f32);
  CHECK(w.grad().to_vector<float>() == std::vector<float>(3, static_cast<float>(tiny)));
  CHECK(global_grad_norm({w}) == doctest::Approx(std::sqrt(3.0) * tiny).epsilon(1e-12));
  CHECK_ERROR_CONTAINS(scaler.unscale_(opt), "already called since the last update()");
  CHECK(scaler.step(opt));  // does not unscale a second time
  CHECK(opt.step_count(0, 0) == 1);
  // Adam's first step moves by lr * g / (|g| + eps): the tiny gradient was used, not zero.
  CHECK(opt.master_weights(0, 0).to_vector<float>()[0] ==
        doctest::Approx(1.0 - 1e-3 * tiny / (tiny + 1e-8)).epsilon(1e-6));
  scaler.update();
  CHECK(scaler.scale() == 65536.0);
  CHECK(scaler.growth_tracker() == 1);
  CHECK_ERROR_CONTAINS(scaler.update(), "step() was not called");
}

TEST_CASE("loss scaler: an injected inf skips exactly one step and halves the scale") {
  Variable w = Variable::leaf(full({4}, 0.5), true, "w");
  AdamW opt({w}, AdamWOptions{1e-2, 0.9, 0.999, 1e-8, 0.01});
  DynamicLossScaler scaler({/*init_scale=*/1024.0, 2.0, 0.5, /*growth_interval=*/3, true});
  std::vector<double> scales;
  std::vector<bool> stepped;
  for (int t = 0; t < 10; ++t) {
    Tensor values = full({4}, 0.25);
    Variable loss = sum(mul(w, Variable(values)));
    scaler.scale_loss(loss).backward();
    if (t == 4) {  // inject an inf into the gradient, as an fp16 overflow would
      Tensor g = w.grad();
      g.narrow(0, 2, 1).fill_(std::numeric_limits<double>::infinity());
    }
    if (t == 7) {  // and a NaN
      Tensor g = w.grad();
      g.narrow(0, 0, 1).fill_(std::numeric_limits<double>::quiet_NaN());
    }
    const Tensor before = w.data().clone();
    const bool did_step = scaler.step(opt);
    stepped.push_back(did_step);
    if (!did_step) {
      CHECK(scaler.found_inf());
      CHECK(max_abs_diff(before, w.data()) == 0.0);  // parameters untouched
    }
    scaler.update();
    scales.push_back(scaler.scale());
    opt.zero_grad();
  }
  CHECK(stepped == std::vector<bool>{true, true, true, true, false, true, true, false, true, true});
  // growth every 3 clean steps; backoff (x0.5, tracker reset) on each skipped step
  CHECK(scales == std::vector<double>{1024, 1024, 2048, 2048, 1024, 1024, 1024, 512, 512, 512});
  CHECK(opt.step_count(0, 0) == 8);  // the two skipped steps did not count
}

TEST_CASE("loss scaler: state round-trip, disabled scaler, option checks") {
  DynamicLossScaler scaler({256.0, 2.0, 0.5, 5, true});
  Variable w = Variable::leaf(ones({2}), true, "w");
  AdamW opt({w}, AdamWOptions{});
  for (int t = 0; t < 7; ++t) {
    scaler.scale_loss(sum(w)).backward();
    scaler.step(opt);
    scaler.update();
    opt.zero_grad();
  }
  CHECK(scaler.scale() == 512.0);
  CHECK(scaler.growth_tracker() == 2);
  DynamicLossScaler restored({65536.0, 2.0, 0.5, 2000, true});
  restored.load_state_dict(nlohmann::json::parse(scaler.state_dict().dump()));
  CHECK(restored.scale() == 512.0);
  CHECK(restored.growth_tracker() == 2);
  CHECK(restored.state_dict() == scaler.state_dict());

  nlohmann::json bad = scaler.state_dict();
  bad["growth_tracker"] = 5;
  CHECK_ERROR_CONTAINS(restored.load_state_dict(bad), "growth_tracker 5 outside [0, 5)");
  bad = scaler.state_dict();
  bad["scale"] = -1.0;
  CHECK_ERROR_CONTAINS(restored.load_state_dict(bad), "scale must be positive");
  bad = scaler.state_dict();
  bad.erase("backoff_factor");
  CHECK_ERROR_CONTAINS(restored.load_state_dict(bad), "missing field \"backoff_factor\"");
  CHECK(restored.scale() == 512.0);

  DynamicLossScaler off({65536.0, 2.0, 0.5, 2000, false});
  CHECK(off.scale() == 1.0);
  Variable loss = sum(w);
  CHECK(off.scale_loss(loss).is_same(loss));
  loss.backward();
  w.grad().data<float>()[0] = std::numeric_limits<float>::infinity();
  CHECK(off.step(opt));  // a disabled scaler never skips
  off.update();
  CHECK(off.scale() == 1.0);
  CHECK_ERROR_CONTAINS(off.load_state_dict(scaler.state_dict()), "saved by a enabled scaler, loaded into a disabled one");

  CHECK_ERROR_CONTAINS(DynamicLossScaler({0.0, 2.0, 0.5, 10, true}), "scale must be positive");
  CHECK_ERROR_CONTAINS(DynamicLossScaler({1.0, 1.0, 0.5, 10, true}), "growth_factor must be > 1");
  CHECK_ERROR_CONTAINS(DynamicLossScaler({1.0, 2.0, 1.0, 10, true}), "backoff_factor must lie in (0, 1)");
  CHECK_ERROR_CONTAINS(DynamicLossScaler({1.0, 2.0, 0.5, 0, true}), "growth_interval must be >= 1");
}

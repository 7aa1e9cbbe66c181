// Learning-rate schedules, gradient norm/clipping/zeroing, gradient accumulation.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include "autograd/functions.h"
#include "optim/grad_utils.h"
#include "optim/lr_schedule.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {


Variable param_with_grad(std::vector<float> grad, DType dtype = DType::f32) {
  const Shape shape{static_cast<int64_t>(grad.size())};
  Variable p = Variable::leaf(zeros(shape, dtype));
  p.set_grad(from_vector(grad, shape, dtype));
  return p;
}

}  // namespace

TEST_CASE("lr schedules: warmup, decay shapes and floor") {
  LrSchedule s{LrScheduleKind::cosine, 2e-4, 10, 110, 0.1};
  s.validate();
  CHECK(s.lr(0) == 0.0);                                // first update of a warmup has lr 0
  CHECK(s.lr(5) == doctest::Approx(1e-4).epsilon(1e-15));
  CHECK(s.factor(10) == 1.0);                           // end of warmup: the peak
  CHECK(s.factor(60) == doctest::Approx(0.1 + 0.9 * 0.5).epsilon(1e-15));  // half-way: cos(pi/2) = 0
  CHECK(s.factor(35) == doctest::Approx(0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * 0.25))).epsilon(1e-15));
  CHECK(s.factor(110) == doctest::Approx(0.1).epsilon(1e-15));
  CHECK(s.factor(500) == doctest::Approx(0.1).epsilon(1e-15));  // clamped past total_steps

  LrSchedule linear{LrScheduleKind::linear, 1.0, 4, 104, 0.0};
  CHECK(linear.factor(2) == 0.5);
  CHECK(linear.factor(4) == 1.0);
  CHECK(linear.factor(29) == doctest::Approx(0.75).epsilon(1e-15));
  CHECK(linear.factor(104) == 0.0);
  CHECK(linear.factor(1000) == 0.0);
  linear.min_lr_ratio = 0.2;
  CHECK(linear.factor(54) == doctest::Approx(0.2 + 0.8 * 0.5).epsilon(1e-15));
  CHECK(linear.factor(1000) == doctest::Approx(0.2).epsilon(1e-15));

  LrSchedule constant{LrScheduleKind::constant, 3e-4, 3, 0, 0.0};
  constant.validate();  // total_steps is not needed without decay
  CHECK(constant.lr(1) == doctest::Approx(1e-4).epsilon(1e-15));
  CHECK(constant.lr(3) == 3e-4);
  CHECK(constant.lr(1000000) == 3e-4);

  // Monotone: non-decreasing through warmup, non-increasing after.
  for (auto kind : {LrScheduleKind::linear, LrScheduleKind::cosine}) {
    LrSchedule m{kind, 1.0, 7, 50, 0.05};
    for (int64_t step = 1; step < 60; ++step) {
      if (step <= 7) {
        CHECK(m.factor(step) >= m.factor(step - 1));
      } else {
        CHECK(m.factor(step) <= m.factor(step - 1));
      }
      CHECK(m.factor(step) >= (step < 7 ? 0.0 : 0.05));
    }
  }
}

TEST_CASE("lr schedules: validation and state") {
  CHECK_ERROR_CONTAINS((LrSchedule{LrScheduleKind::cosine, 1e-3, 10, 10, 0.0}.validate()),
                       "total_steps > warmup_steps");
  CHECK_ERROR_CONTAINS((LrSchedule{LrScheduleKind::linear, 1e-3, 0, 10, 1.5}.validate()), "min_lr_ratio");
  CHECK_ERROR_CONTAINS((LrSchedule{LrScheduleKind::linear, -1.0, 0, 10, 0.0}.validate()), "base_lr");
  CHECK_ERROR_CONTAINS((LrSchedule{LrScheduleKind::constant, 1e-3, -1, 0, 0.0}.validate()), "warmup_steps");
  CHECK_ERROR_CONTAINS(parse_lr_schedule_kind("cosine_with_restarts"), "\"cosine_with_restarts\"");
  CHECK_ERROR_CONTAINS((LrSchedule{}.factor(-1)), "step must be >= 0");

  const LrSchedule saved{LrScheduleKind::cosine, 2e-4, 100, 3000, 0.1};
  LrSchedule loaded;
  loaded.load_state_dict(nlohmann::json::parse(saved.state_dict().dump()));
  CHECK(loaded.kind == saved.kind);
  CHECK(loaded.base_lr == saved.base_lr);
  CHECK(loaded.warmup_steps == 100);
  CHECK(loaded.total_steps == 3000);
  CHECK(loaded.min_lr_ratio == saved.min_lr_ratio);
  for (int64_t step : {0, 50, 100, 1234, 3000}) CHECK(loaded.lr(step) == saved.lr(step));

  nlohmann::json bad = saved.state_dict();
  bad.erase("total_steps");
  CHECK_ERROR_CONTAINS(loaded.load_state_dict(bad), "missing field \"total_steps\"");
  bad = saved.state_dict();
  bad["warmup_steps"] = "ten";
  CHECK_ERROR_CONTAINS(loaded.load_state_dict(bad), "\"warmup_steps\" has the wrong type");
  bad = saved.state_dict();
  bad["total_steps"] = 50;  // fewer than the warmup
  CHECK_ERROR_CONTAINS(loaded.load_state_dict(bad), "total_steps > warmup_steps");
  CHECK(loaded.total_steps == 3000);  // a failed load changes nothing
}

TEST_CASE("global_grad_norm: all gradients, any dtype, undefined skipped, inf/NaN seen") {
  Variable a = param_with_grad({3.f, 0.f});
  Variable b = param_with_grad({4.f}, DType::bf16);
  Variable c = Variable::leaf(zeros({2}));  // no gradient
  Variable d = param_with_grad({12.f}, DType::f16);
  CHECK(global_grad_norm({a, b, c, d}) == doctest::Approx(13.0).epsilon(1e-15));
  CHECK(global_grad_norm({c}) == 0.0);

  // f64 accumulation: squares of 1e20 overflow f32 but not the norm.
  Variable big = param_with_grad({1e20f, 1e20f});
  CHECK(global_grad_norm({big}) == doctest::Approx(std::sqrt(2.0) * 1e20).epsilon(1e-6));
  CHECK(grads_are_finite({big}));

  Variable inf = param_with_grad({1.f, std::numeric_limits<float>::infinity()});
  Variable nan = param_with_grad({std::numeric_limits<float>::quiet_NaN()}, DType::bf16);
  CHECK(std::isinf(global_grad_norm({a, inf})));
  CHECK(std::isnan(global_grad_norm({a, nan})));
  CHECK(grads_are_finite({a, b, c, d}));
  CHECK_FALSE(grads_are_finite({a, inf}));
  CHECK_FALSE(grads_are_finite({nan, a}));
}

TEST_CASE("clip_grad_norm_: returns the norm before clipping, clips to max_norm") {
  Variable a = param_with_grad({3.f, 0.f});
  Variable b = param_with_grad({4.f});
  const double norm = clip_grad_norm_({a, b}, 1.0);
  CHECK(norm == doctest::Approx(5.0).epsilon(1e-15));
  CHECK(global_grad_norm({a, b}) == doctest::Approx(1.0).epsilon(1e-6));
  // torch's coefficient: max_norm / (norm + 1e-6)
  CHECK(a.grad().to_vector<float>()[0] == static_cast<float>(3.0 * (1.0 / (5.0 + 1e-6))));

  // Below the limit: untouched, bit for bit.
  Variable c = param_with_grad({0.3f, -0.4f});
  CHECK(clip_grad_norm_({c}, 1.0) == doctest::Approx(0.5).epsilon(1e-7));
  CHECK(c.grad().to_vector<float>() == std::vector<float>{0.3f, -0.4f});

  // Non-finite: reported, gradients left alone for the caller to skip the step.
  Variable d = param_with_grad({2.f, std::numeric_limits<float>::infinity()});
  CHECK(std::isinf(clip_grad_norm_({c, d}, 1.0)));
  CHECK(d.grad().to_vector<float>()[0] == 2.f);
  CHECK(c.grad().to_vector<float>() == std::vector<float>{0.3f, -0.4f});

  CHECK_ERROR_CONTAINS(clip_grad_norm_({c}, 0.0), "max_norm must be positive");
}

TEST_CASE("zero_grad and scale_grads_") {
  Variable a = param_with_grad({1.f, 2.f});
  Variable b = param_with_grad({3.f}, DType::bf16);
  scale_grads_({a, b}, 0.5);
  CHECK(a.grad().to_vector<float>() == std::vector<float>{0.5f, 1.f});
  CHECK(b.grad().to_vector<float>() == std::vector<float>{1.5f});
  const void* storage = a.grad().data_ptr();
  zero_grad({a, b}, /*set_to_none=*/false);
  CHECK(a.grad().data_ptr() == storage);  // memory kept
  CHECK(a.grad().to_vector<float>() == std::vector<float>{0.f, 0.f});
  zero_grad({a, b});
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
}

TEST_CASE("GradAccumulator: averaged micro-batch gradients equal the full-batch gradient") {
  // loss(batch) = mean over rows of (x_row . w)^2; four micro-batches of 2 rows vs one batch of 8.
  Generator gen(7);
  const Tensor x = randn({8, 3}, gen, DType::f64);
  Variable w_full = Variable::leaf(randn({3}, gen, DType::f64));
  Variable w_acc = Variable::leaf(w_full.data().clone());
  mean(square(matmul(Variable(x), w_full))).backward();

  GradAccumulator acc(4);
  CHECK(acc.micro_batches() == 4);
  int steps = 0;
  for (int64_t k = 0; k < 4; ++k) {
    const Tensor rows = x.narrow(0, 2 * k, 2);
    acc.scale_loss(mean(square(matmul(Variable(rows), w_acc)))).backward();
    CHECK(acc.position() == k);
    if (acc.micro_batch_done()) steps += 1;
    CHECK(acc.position() == (k + 1) % 4);
  }
  CHECK(steps == 1);
  CHECK(acc.position() == 0);
  CHECK(max_abs_diff(w_acc.grad(), w_full.grad()) < 1e-14);

  GradAccumulator one(1);
  Variable loss = Variable::leaf(scalar_tensor(2.0));
  CHECK(one.scale_loss(loss).is_same(loss));
  CHECK(one.micro_batch_done());

  // State: the position within the step survives a restart.
  GradAccumulator a(3), b(3);
  a.micro_batch_done();
  a.micro_batch_done();
  b.load_state_dict(a.state_dict());
  CHECK(b.position() == 2);
  CHECK(b.micro_batch_done());
  GradAccumulator c(5);
  CHECK_ERROR_CONTAINS(c.load_state_dict(a.state_dict()), "saved with 3 micro-batches per step, this run uses 5");
  CHECK_ERROR_CONTAINS(GradAccumulator(0), "micro_batches must be >= 1");
}

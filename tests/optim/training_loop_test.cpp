// The pieces together, as mlr-train will use them: parameter groups, a cosine schedule with
// warmup, gradient accumulation, dynamic loss scaling, clipping and checkpoint/resume, on a
// least-squares problem with a known solution.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "autograd/functions.h"
#include "optim/adamw.h"
#include "optim/grad_utils.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

struct Trainer {
  Variable w, b;
  AdamW opt;
  LrSchedule schedule{LrScheduleKind::cosine, 1.0, 20, 400, 0.05};
  DynamicLossScaler scaler{{1024.0, 2.0, 0.5, 25, true}};
  GradAccumulator accumulation{2};
  int64_t step = 0;

  Trainer(const Tensor& w0, const Tensor& b0)
      : w(Variable::leaf(w0.clone(), true, "weight")),
        b(Variable::leaf(b0.clone(), true, "bias")),
        opt(make_param_groups({{"linear.weight", w}, {"linear.bias", b}}, {5e-2, 0.9, 0.999, 1e-8, 1e-4})) {}

  // One optimizer step over two micro-batches of rows [start, start + 16) of (x, y).
  double train_step(const Tensor& x, const Tensor& y, int64_t start) {
    double loss_sum = 0;
    for (int64_t k = 0; k < accumulation.micro_batches(); ++k) {
      const Tensor xs = x.narrow(0, start + 8 * k, 8), ys = y.narrow(0, start + 8 * k, 8);
      Variable loss = mean(square(sub(add(matmul(Variable(xs), w), b), Variable(ys))));
      loss_sum += loss.item<double>();
      scaler.scale_loss(accumulation.scale_loss(loss)).backward();
      if (accumulation.micro_batch_done()) break;
    }
    scaler.unscale_(opt);
    clip_grad_norm_(opt.parameters(), 1.0);
    opt.set_lr_factor(schedule.factor(step));
    scaler.step(opt);
    scaler.update();
    opt.zero_grad();
    step += 1;
    return loss_sum / static_cast<double>(accumulation.micro_batches());
  }
};

bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.data_ptr(), b.data_ptr(), a.nbytes()) == 0;
}

}  // namespace

TEST_CASE("training loop: converges, and a resumed run continues bit for bit") {
  Generator gen(99);
  const Tensor x = randn({64, 3}, gen);
  const Tensor w_true = tensor<float>({1.5f, -2.0f, 0.5f}).view({3, 1});
  const Tensor y = add(matmul(x, w_true), 0.75);
  const Tensor w0 = zeros({3, 1}), b0 = zeros({1});

  Trainer straight(w0, b0);
  REQUIRE(straight.opt.groups().size() == 2);  // the bias has no weight decay
  CHECK(straight.opt.groups()[1].names == std::vector<std::string>{"linear.bias"});
  double first_loss = 0, last_loss = 0;
  TrainingState opt_state;
  nlohmann::json loop_state;
  Tensor w_saved, b_saved;
  std::vector<double> losses_after_save;
  for (int64_t s = 0; s < 300; ++s) {
    const double loss = straight.train_step(x, y, (s % 4) * 16);
    if (s == 0) first_loss = loss;
    last_loss = loss;
    if (s == 149) {  // checkpoint
      opt_state = straight.opt.state_dict();
      loop_state = {{"step", straight.step},
                    {"schedule", straight.schedule.state_dict()},
                    {"scaler", straight.scaler.state_dict()},
                    {"accumulation", straight.accumulation.state_dict()}};
      w_saved = straight.w.data().clone();
      b_saved = straight.b.data().clone();
    }
    if (s >= 150) losses_after_save.push_back(loss);
  }
  MESSAGE("loss ", first_loss, " -> ", last_loss, ", loss scale ", straight.scaler.scale());
  CHECK(first_loss > 1.0);
  CHECK(last_loss < 1e-4);
  CHECK(straight.w.data().to_vector<float>()[1] == doctest::Approx(-2.0).epsilon(1e-2));
  CHECK(straight.b.data().to_vector<float>()[0] == doctest::Approx(0.75).epsilon(1e-2));
  CHECK(straight.scaler.scale() > 1024.0);  // grew over clean intervals

  // Resume from the checkpoint through serialised JSON, in a fresh trainer.
  Trainer resumed(w_saved, b_saved);
  const nlohmann::json loop = nlohmann::json::parse(loop_state.dump());
  resumed.opt.load_state_dict({opt_state.tensors, nlohmann::json::parse(opt_state.scalars.dump())});
  resumed.schedule.load_state_dict(loop.at("schedule"));
  resumed.scaler.load_state_dict(loop.at("scaler"));
  resumed.accumulation.load_state_dict(loop.at("accumulation"));
  resumed.step = loop.at("step").get<int64_t>();
  std::vector<double> resumed_losses;
  for (int64_t s = 150; s < 300; ++s) resumed_losses.push_back(resumed.train_step(x, y, (s % 4) * 16));
  CHECK(resumed_losses == losses_after_save);
  CHECK(bit_equal(resumed.w.data(), straight.w.data()));
  CHECK(bit_equal(resumed.b.data(), straight.b.data()));
  CHECK(resumed.scaler.state_dict() == straight.scaler.state_dict());
}

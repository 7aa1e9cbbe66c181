// trainer_state.json of a training checkpoint, read as mlr-train --resume reads it
// (train/trainer_state.cpp), then each part handed to its owner as the trainer does: the AdamW
// scalars with the optimizer tensors of a matching two-parameter optimizer, the loss scaler, the
// loader's mixture position (restored into a sampler, which then draws), the generators.
#include <cstddef>
#include <cstdint>
#include <string>

#include "autograd/variable.h"
#include "data/mixture.h"
#include "fuzz/fuzz_support.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "tensor/tensor.h"
#include "train/trainer_state.h"

namespace {

using namespace mlr;

// The optimizer a checkpoint would belong to: an f32 and a bf16 parameter (the bf16 one has f32
// master weights), one step taken so that every state tensor exists.
struct Optimizer {
  Variable w = Variable::leaf(ones({2, 2}), true, "w");
  Variable b = Variable::leaf(ones({2}, DType::bf16), true, "b");
  AdamW adamw{{w, b}, AdamWOptions{}};
  Optimizer() {
    w.set_grad(ones({2, 2}));
    b.set_grad(ones({2}, DType::bf16));
  }
};

const TrainingState& saved_tensors() {
  static const TrainingState state = [] {
    Optimizer o;
    o.adamw.step();
    return o.adamw.state_dict();
  }();
  return state;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = "checkpoints/step-3/trainer_state.json";
  TrainerState state;
  try {
    state = parse_trainer_state(std::string(fuzz::as_text(data, size)), path);
  } catch (const Error&) {
    return 0;
  }
  fuzz::expect_clean_rejection([&] {
    Optimizer o;
    o.adamw.load_state_dict(TrainingState{saved_tensors().tensors, state.optimizer});
    o.adamw.step();  // a loaded state must be usable
  });
  fuzz::expect_clean_rejection([&] {
    DynamicLossScaler scaler;
    scaler.load_state_dict(state.loss_scaler);
  });
  fuzz::expect_clean_rejection([&] {
    data::MixtureSampler sampler({{"a", 3}, {"b", 5}}, data::MixtureOptions{});
    sampler.restore(state.loader.mixture);
    for (int i = 0; i < 4; ++i) (void)sampler.next();
  });
  Generator generator;
  generator.set_state(state.rng_seed, state.rng_offset);
  return 0;
}

// Checkpoint-state inputs the fuzz target (fuzz/checkpoint_state_fuzz.cpp) found to reach undefined
// behaviour, kept as tests: each is now an error naming the field.
#include <doctest/doctest.h>

#include <cstdint>

#include "autograd/variable.h"
#include "optim/adamw.h"
#include "optim/loss_scaler.h"
#include "tests/test_support.h"

using namespace mlr;

TEST_CASE("optimizer state: an integer field given as a float is an error, not a cast") {
  DynamicLossScaler scaler;
  nlohmann::json state = scaler.state_dict();
  state["growth_interval"] = 1e300;  // cast to int64: undefined behaviour
  CHECK_ERROR_CONTAINS(scaler.load_state_dict(state), "field \"growth_interval\" is 1e+300, expected an integer");
  state["growth_interval"] = 2000.5;
  CHECK_ERROR_CONTAINS(scaler.load_state_dict(state), "field \"growth_interval\" is 2000.5");
}

TEST_CASE("AdamW state: a step count that cannot grow is an error") {
  Variable w = Variable::leaf(ones({2}), true, "w");
  AdamW opt({w}, AdamWOptions{});
  w.set_grad(ones({2}));
  opt.step();
  TrainingState saved = opt.state_dict();
  saved.scalars["state"]["w"]["step"] = INT64_MAX;  // the next step() overflowed it
  CHECK_ERROR_CONTAINS(opt.load_state_dict(saved), "parameter 'w': step 9223372036854775807");
  saved.scalars["state"]["w"]["step"] = 1e300;
  CHECK_ERROR_CONTAINS(opt.load_state_dict(saved), "field \"step\" is 1e+300, expected an integer");
  saved.scalars["state"]["w"]["step"] = 1;
  opt.load_state_dict(saved);
  CHECK(opt.step_count(0, 0) == 1);
}

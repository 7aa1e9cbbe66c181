// Checkpointing replays every generator a segment draws from and lets modules keep side effects
// to the real forward (autograd/checkpoint.h): gradients equal the plain run's bit for bit with two
// private generators (not the default one), each generator ends where the plain run leaves it, a
// recompute that draws differently is an error, and once_per_forward runs once per forward.
#include <doctest/doctest.h>

#include <cstring>
#include <memory>

#include "autograd/checkpoint.h"
#include "autograd/functions.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

// tanh(x W^T) with two inverted-dropout masks, each from its own generator (as two adapters).
struct TwoStreamBlock {
  Variable w;
  Generator* first;
  Generator* second;
  Variable operator()(const Variable& x) const {
    Variable h = tanh(linear(x, w));
    Tensor keep1 = gt(rand(h.shape(), *first, DType::f64), 0.25);
    h = masked_fill(h, logical_not(keep1), 0.0) / 0.75;
    Tensor keep2 = gt(rand(h.shape(), *second, DType::f64), 0.5);
    return masked_fill(h, logical_not(keep2), 0.0) / 0.5;
  }
};

bool bitwise_equal(const Tensor& a, const Tensor& b) {
  if (a.shape() != b.shape()) return false;
  const std::vector<double> x = a.to_vector<double>(), y = b.to_vector<double>();
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(double)) == 0;
}

}  // namespace

TEST_CASE("checkpoint replays every generator the segment draws from, not only the default one") {
  Generator data(5);
  const Tensor xs = randn({7, 4}, data, DType::f64), ws = randn({5, 4}, data, DType::f64);
  const uint64_t default_before = default_generator().offset();
  Tensor grads[2];
  uint64_t offsets[2][2];
  for (int use_ckpt = 0; use_ckpt < 2; ++use_ckpt) {
    Generator g1(101), g2(202);
    g2.set_state(202, 9);  // mid-stream, as after earlier steps
    TwoStreamBlock block{Variable::leaf(ws.clone(), true), &g1, &g2};
    Variable x = Variable::leaf(xs.clone(), true);
    // Two applications: the second segment starts where the first left each generator.
    auto one = [&](const Variable& in) { return use_ckpt ? checkpoint(block, in) : block(in); };
    Variable y = one(one(x).narrow(1, 0, 4));
    sum(mul(y, y)).backward();
    grads[use_ckpt] = cat(std::vector<Tensor>{block.w.grad().reshape({-1}), x.grad().reshape({-1})}, 0);
    offsets[use_ckpt][0] = g1.offset();
    offsets[use_ckpt][1] = g2.offset();
  }
  CHECK(bitwise_equal(grads[1], grads[0]));
  CHECK(offsets[1][0] == offsets[0][0]);
  CHECK(offsets[1][1] == offsets[0][1]);
  CHECK(offsets[0][0] > 0);
  CHECK(default_generator().offset() == default_before);  // untouched by the segment
}

TEST_CASE("checkpoint: a recompute that draws differently from its forward is an error") {
  Generator g(3);
  Variable w = Variable::leaf(full({3, 3}, 0.5, DType::f64), true);
  Variable x(full({2, 3}, 1.0, DType::f64));
  SUBCASE("fewer numbers") {
    int calls = 0;
    Variable y = checkpoint(
        [&](const Variable& in) {
          Variable h = linear(in, w);
          const int64_t n = ++calls == 1 ? 6 : 2;  // the forward draws 6, the recompute 2
          return mul(h, Variable(rand({n}, g, DType::f64).narrow(0, 0, 1)));
        },
        x);
    try {
      sum(y).backward();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("the recomputed segment drew 1 counters from a random generator (seed 3), "
                                       "its forward drew 2") != std::string::npos);
    }
  }
  SUBCASE("a generator the forward did not use") {
    int calls = 0;
    auto fresh = std::make_unique<Generator>(44);
    Variable y = checkpoint(
        [&](const Variable& in) {
          Variable h = linear(in, w);
          if (++calls == 1) return h;
          return mul(h, Variable(rand({1}, *fresh, DType::f64)));
        },
        x);
    try {
      sum(y).backward();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("drew from a random generator (seed 44) that its forward did not use") !=
            std::string::npos);
    }
  }
  SUBCASE("a generator destroyed between forward and backward is never touched") {
    auto gone = std::make_unique<Generator>(55);
    Generator* live = gone.get();
    Variable y = checkpoint(
        [&](const Variable& in) { return mul(linear(in, w), Variable(rand({1}, *live, DType::f64))); }, x);
    gone.reset();
    Generator replacement(55);  // may reuse the memory; it is a different stream
    live = &replacement;
    try {
      sum(y).backward();
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).find("that its forward did not use") != std::string::npos);
    }
    CHECK(replacement.offset() == 1);  // drawn once by the recompute, not reset by the replay
  }
}

TEST_CASE("checkpoint: in_checkpoint_recompute and once_per_forward") {
  Variable w = Variable::leaf(full({2, 2}, 0.5, DType::f64), true);
  Variable x(full({3, 2}, 1.0, DType::f64));
  int forwards = 0, effects = 0;
  std::vector<bool> recomputing;
  Variable y = checkpoint(
      [&](const Variable& in) {
        ++forwards;
        recomputing.push_back(in_checkpoint_recompute());
        once_per_forward([&] { ++effects; });
        return linear(in, w);
      },
      x);
  CHECK_FALSE(in_checkpoint_recompute());
  sum(y).backward();
  CHECK(forwards == 2);
  CHECK(effects == 1);
  CHECK(recomputing == std::vector<bool>{false, true});
  CHECK_FALSE(in_checkpoint_recompute());
}

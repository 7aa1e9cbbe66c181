// Trains a small MLP (1 -> 32 -> 32 -> 1, tanh) on y = sin(3x), x in [-1, 1], with autograd and
// SGD with momentum, full batch. Exits non-zero unless the final loss is at least 100x below the
// initial loss, so it runs as a test (ctest: example_mlp_regression).
#include <cmath>
#include <cstdio>
#include <vector>

#include "autograd/functions.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

struct Linear {
  Variable weight, bias;
  // As torch.nn.Linear: Kaiming-uniform weight (a = sqrt 5), bias uniform in +-1/sqrt(fan_in).
  Linear(int64_t in, int64_t out, Generator& gen) {
    Tensor w = empty({out, in});
    kaiming_uniform_(w, std::sqrt(5.0), gen);
    Tensor b = empty({out});
    const double bound = 1.0 / std::sqrt(static_cast<double>(in));
    uniform_(b, -bound, bound, gen);
    weight = Variable::leaf(w);
    bias = Variable::leaf(b);
  }
  Variable operator()(const Variable& x) const { return linear(x, weight, bias); }
};

}  // namespace

int main() {
  const int64_t n = 256, steps = 1000, print_every = 100;
  const double lr = 0.05, momentum = 0.9;
  Generator gen(0);

  Tensor x = arange(-1.0, 1.0, 2.0 / n, DType::f32).reshape({n, 1});
  Tensor y = sin(mul(x, 3.0));

  Linear l1(1, 32, gen), l2(32, 32, gen), l3(32, 1, gen);
  std::vector<Variable> params = {l1.weight, l1.bias, l2.weight, l2.bias, l3.weight, l3.bias};
  std::vector<Tensor> velocity;
  for (const Variable& p : params) velocity.push_back(zeros_like(p.data()));

  double initial = 0.0, last = 0.0;
  for (int64_t step = 0; step <= steps; ++step) {
    Variable pred = l3(tanh(l2(tanh(l1(x)))));
    Variable loss = mean(square(pred - y));
    last = loss.item<double>();
    if (step == 0) initial = last;
    if (step % print_every == 0)
      std::printf("step %5lld/%lld | loss %.6f | %.1fx below initial\n", static_cast<long long>(step),
                  static_cast<long long>(steps), last, initial / last);
    if (step == steps) break;

    for (Variable& p : params) p.zero_grad();
    loss.backward();
    // v = momentum * v + grad;  p -= lr * v
    for (size_t i = 0; i < params.size(); ++i) {
      mul_(velocity[i], momentum);
      add_(velocity[i], params[i].grad());
      Tensor data = params[i].data();
      add_(data, mul(velocity[i], -lr));
    }
  }
  const double ratio = initial / last;
  if (!(ratio >= 100.0)) {
    std::printf("FAILED: the loss fell %.1fx (from %.6f to %.6f); expected at least 100x\n", ratio, initial, last);
    return 1;
  }
  std::printf("ok: the loss fell %.1fx (from %.6f to %.6f)\n", ratio, initial, last);
  return 0;
}

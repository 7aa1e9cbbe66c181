// LoRA (r = 8) and MultiLoRA (4 modules of rank 2, the same A/B parameter count plus 4 scales)
// trained for the same steps on one regression problem; prints their losses and the spectra of
// their updates as a table. A report, not a test: which way the spectra fall is the finding.
//
// Problem: y = (W0 + dW*) x with W0 frozen, dW* = U diag(s) V^T, s_i = 0.85^i (32 values),
// x ~ N(0, I), loss = mean squared error; Adam (lr 1e-2) on fresh batches of 64 from one seed.
// At a least-squares optimum both reach the best rank-8 approximation of dW* (the same spectrum),
// so any difference here is in the training dynamics within the step budget.
//
// usage: spectra_bench [steps=200] [early=40]
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "autograd/functions.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/spectrum.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

constexpr int64_t kDim = 32, kBatch = 64, kRank = 8;

Tensor random_tensor(const Shape& shape, uint64_t seed, double std = 1.0) {
  Generator gen(seed);
  return mul(randn(shape, gen, DType::f64), std);
}

// Adam (no weight decay) over Variables, enough for this experiment.
struct Adam {
  std::vector<Variable> params;
  std::vector<Tensor> m, v;
  double lr, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  int64_t t = 0;
  Adam(std::vector<Variable> p, double lr_) : params(std::move(p)), lr(lr_) {
    for (auto& x : params) {
      m.push_back(zeros_like(x.data()));
      v.push_back(zeros_like(x.data()));
    }
  }
  void step() {
    ++t;
    for (size_t i = 0; i < params.size(); ++i) {
      const Tensor& g = params[i].grad();
      if (!g.defined()) continue;
      m[i] = m[i] * b1 + g * (1 - b1);
      v[i] = v[i] * b2 + square(g) * (1 - b2);
      Tensor mh = m[i] / (1 - std::pow(b1, static_cast<double>(t)));
      Tensor vh = v[i] / (1 - std::pow(b2, static_cast<double>(t)));
      Tensor p = params[i].data();
      p.copy_(p - mh / (sqrt(vh) + eps) * lr);
      params[i].zero_grad(true);
    }
  }
};

Tensor teacher_delta() {
  Svd a = svd(random_tensor({kDim, kDim}, 1)), b = svd(random_tensor({kDim, kDim}, 2));
  std::vector<double> s;
  for (int64_t i = 0; i < kDim; ++i) s.push_back(std::pow(0.85, static_cast<double>(i)));
  return matmul(mul(a.U, from_vector(s, {kDim})), b.U.t());
}

struct RunResult {
  double first_loss = 0, last_loss = 0;
  SpectrumStats early;  // after `early` steps
  SpectrumStats spectrum;
};

RunResult train(AdaptedLinear& layer, const Tensor& w0, const Tensor& dstar, int64_t steps, int64_t early) {
  Adam opt(layer.parameters(), 1e-2);
  Generator data(7);
  RunResult r;
  for (int64_t step = 0; step < steps; ++step) {
    Tensor x = randn({kBatch, kDim}, data, DType::f64);
    Tensor y = linear(x, w0 + dstar);
    Variable loss = mean(square(sub(layer.forward(x), Variable(y))));
    if (step == 0) r.first_loss = loss.item<double>();
    r.last_loss = loss.item<double>();
    loss.backward();
    opt.step();
    if (step + 1 == early) r.early = spectrum_stats(layer.delta_weight());
  }
  r.spectrum = spectrum_stats(layer.delta_weight());
  return r;
}

std::string head(const std::vector<double>& v, size_t n) {
  std::string out;
  for (size_t i = 0; i < std::min(n, v.size()); ++i) out += fmt::format("{}{:.3f}", i ? " " : "", v[i]);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t steps = argc > 1 ? std::atoll(argv[1]) : 200;
  const int64_t early = argc > 2 ? std::atoll(argv[2]) : 40;
  Tensor w0 = random_tensor({kDim, kDim}, 3, 0.2), dstar = teacher_delta();
  Generator g1(11), g2(11);
  LoraConfig lc;
  lc.r = kRank;
  lc.alpha = kRank;
  LoraLinear lora(w0, Tensor(), lc, g1);
  MultiLoraConfig mc;
  mc.r = kRank;
  mc.n_modules = 4;
  mc.alpha = kRank;
  MultiLoraLinear multi(w0, Tensor(), mc, g2);
  const RunResult rl = train(lora, w0, dstar, steps, early), rm = train(multi, w0, dstar, steps, early);
  const SpectrumStats best = spectrum_stats(dstar);
  // Best achievable rank-8 loss: the energy past the 8th singular value, / kDim (E||dW x||^2 / out).
  double tail = 0;
  for (size_t i = kRank; i < best.singular_values.size(); ++i) tail += best.singular_values[i] * best.singular_values[i];

  fmt::print("LoRA vs MultiLoRA at rank {} on a decaying-spectrum regression ({} Adam steps, batch {}, dim {})\n", kRank,
             steps, kBatch, kDim);
  fmt::print("{:<14} {:>10} {:>10} {:>8} {:>8} {:>7} {:>10}  {}\n", "run", "loss 0", "loss end", "entropy", "eff rank",
             "top-1", fmt::format("entropy@{}", early), "singular values 1..9");
  fmt::print("{:<14} {:>10} {:>10.5f} {:>8.4f} {:>8.3f} {:>7.4f} {:>10}  {}\n", "target dW*", "", tail / kDim, best.entropy,
             best.effective_rank, best.top_k_energy(1), "", head(best.singular_values, 9));
  for (const auto& [name, r] : {std::pair{"LoRA r=8", &rl}, std::pair{"MultiLoRA 4x2", &rm}}) {
    fmt::print("{:<14} {:>10.5f} {:>10.5f} {:>8.4f} {:>8.3f} {:>7.4f} {:>10.4f}  {}\n", name, r->first_loss, r->last_loss,
               r->spectrum.entropy, r->spectrum.effective_rank, r->spectrum.top_k_energy(1), r->early.entropy,
               head(r->spectrum.singular_values, 9));
  }
  fmt::print("(target row: the best rank-{} loss; both updates have rank <= {}, so their 9th value is rounding)\n", kRank,
             kRank);
  return 0;
}

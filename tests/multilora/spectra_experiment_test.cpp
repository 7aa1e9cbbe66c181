// Report, do not tune: LoRA (r = 8) and MultiLoRA (4 modules of rank 2, same A/B parameter count
// plus 4 scales) trained for the same steps on one regression problem; both learn, and the
// spectra of their updates are printed (whichever way they fall).
//
// Problem: y = (W0 + dW*) x with W0 frozen, dW* = U diag(s) V^T, s_i = 0.85^i (32 values), x ~ N(0, I),
// loss = mean squared error; 200 Adam steps (lr 1e-2) on fresh batches of 64 from one seed.
// At a least-squares optimum both reach the best rank-8 approximation of dW* (the same spectrum),
// so any difference here is in the training dynamics within the step budget.
#include <doctest/doctest.h>

#include <cmath>
#include <sstream>

#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/spectrum.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using mlr::test::random_tensor;

namespace {

constexpr int64_t kDim = 32, kBatch = 64, kSteps = 200, kEarly = 40;

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
  SpectrumStats early;  // after kEarly steps
  SpectrumStats spectrum;
};

RunResult train(AdaptedLinear& layer, const Tensor& w0, const Tensor& dstar) {
  Adam opt(layer.parameters(), 1e-2);
  Generator data(7);
  RunResult r;
  for (int64_t step = 0; step < kSteps; ++step) {
    Tensor x = randn({kBatch, kDim}, data, DType::f64);
    Tensor y = linear(x, w0 + dstar);
    Variable loss = mean(square(sub(layer.forward(x), Variable(y))));
    if (step == 0) r.first_loss = loss.item<double>();
    r.last_loss = loss.item<double>();
    loss.backward();
    opt.step();
    if (step + 1 == kEarly) r.early = spectrum_stats(layer.delta_weight());
  }
  r.spectrum = spectrum_stats(layer.delta_weight());
  return r;
}

std::string head(const std::vector<double>& v, size_t n) {
  std::ostringstream os;
  for (size_t i = 0; i < std::min(n, v.size()); ++i) os << (i ? " " : "") << v[i];
  return os.str();
}

}  // namespace

TEST_CASE("spectra experiment: LoRA vs MultiLoRA at equal rank on a decaying-spectrum regression") {
  Tensor w0 = random_tensor({kDim, kDim}, 3, DType::f64, 0.2), dstar = teacher_delta();
  Generator g1(11), g2(11);
  LoraConfig lc;
  lc.r = 8;
  lc.alpha = 8;
  LoraLinear lora(w0, Tensor(), lc, g1);
  MultiLoraConfig mc;
  mc.r = 8;
  mc.n_modules = 4;
  mc.alpha = 8;
  MultiLoraLinear multi(w0, Tensor(), mc, g2);
  RunResult rl = train(lora, w0, dstar), rm = train(multi, w0, dstar);
  SpectrumStats best = spectrum_stats(dstar);
  // Best achievable rank-8 loss: the energy past the 8th singular value, / kDim (E||dW x||^2 / out).
  double tail = 0;
  for (size_t i = 8; i < best.singular_values.size(); ++i) tail += best.singular_values[i] * best.singular_values[i];
  MESSAGE("target dW*: s = " << head(best.singular_values, 8) << " ...; best rank-8 loss " << tail / kDim);
  MESSAGE("LoRA r=8:          loss " << rl.first_loss << " -> " << rl.last_loss << " | s = "
                                     << head(rl.spectrum.singular_values, 9) << " | entropy " << rl.spectrum.entropy
                                     << " | eff. rank " << rl.spectrum.effective_rank << " | top-1 energy "
                                     << rl.spectrum.top_k_energy(1) << " | after " << kEarly
                                     << " steps: s = " << head(rl.early.singular_values, 8) << ", entropy "
                                     << rl.early.entropy);
  MESSAGE("MultiLoRA 4x2:     loss " << rm.first_loss << " -> " << rm.last_loss << " | s = "
                                     << head(rm.spectrum.singular_values, 9) << " | entropy " << rm.spectrum.entropy
                                     << " | eff. rank " << rm.spectrum.effective_rank << " | top-1 energy "
                                     << rm.spectrum.top_k_energy(1) << " | after " << kEarly
                                     << " steps: s = " << head(rm.early.singular_values, 8) << ", entropy "
                                     << rm.early.entropy);
  CHECK(rl.last_loss < 0.5 * rl.first_loss);
  CHECK(rm.last_loss < 0.5 * rm.first_loss);
  // Both updates have rank <= 8: the 9th singular value is rounding.
  CHECK(rl.spectrum.singular_values[8] < 1e-8 * rl.spectrum.singular_values[0]);
  CHECK(rm.spectrum.singular_values[8] < 1e-8 * rm.spectrum.singular_values[0]);
  CHECK(multi.parameters().size() == 3);
  CHECK(multi.lora_A().numel() + multi.lora_B().numel() == lora.lora_A().numel() + lora.lora_B().numel());
}

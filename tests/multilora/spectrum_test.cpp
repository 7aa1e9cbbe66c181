// Singular-value analysis on matrices with known spectra: U diag(s) V^T with random orthogonal
// U and V built from Householder reflections (independent of the SVD under test).
#include <doctest/doctest.h>

#include <cmath>

#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/spectrum.h"
#include "tests/multilora/test_helpers.h"

using namespace mlr;
using mlr::test::error_of;
using mlr::test::random_tensor;

namespace {

// Product of n Householder reflections I - 2 v v^T / (v^T v): a random orthogonal [n, n].
Tensor random_orthogonal(int64_t n, uint64_t seed) {
  Tensor q = zeros({n, n}, DType::f64);
  for (int64_t i = 0; i < n; ++i) q.select(0, i).select(0, i).fill_(1.0);
  for (int64_t k = 0; k < n; ++k) {
    Tensor v = random_tensor({n, 1}, seed * 1000 + static_cast<uint64_t>(k));
    double vv = sum(square(v)).item<double>();
    q = q - mul(matmul(matmul(q, v), v.t()), 2.0 / vv);
  }
  return q;
}

Tensor with_spectrum(int64_t m, int64_t n, const std::vector<double>& s, uint64_t seed) {
  Tensor u = random_orthogonal(m, seed), v = random_orthogonal(n, seed + 1);
  Tensor d = zeros({m, n}, DType::f64);
  for (size_t i = 0; i < s.size(); ++i) d.select(0, static_cast<int64_t>(i)).select(0, static_cast<int64_t>(i)).fill_(s[i]);
  return matmul(matmul(u, d), v.t());
}

}  // namespace

TEST_CASE("spectrum: singular values and vectors of a matrix built from chosen values") {
  std::vector<double> s = {5.0, 3.0, 2.0, 0.5, 0.0};
  Tensor m = with_spectrum(7, 5, s, 3);
  Tensor q = random_orthogonal(7, 3);
  Tensor eye = matmul(q.t(), q);
  for (int64_t i = 0; i < 7; ++i) eye.select(0, i).select(0, i).fill_(eye.select(0, i).select(0, i).item<double>() - 1.0);
  CHECK(amax(abs(eye)).item<double>() < 1e-12);  // the construction is orthogonal

  std::vector<double> got = singular_values(m).to_vector<double>();
  REQUIRE(got.size() == 5);
  for (size_t i = 0; i < 5; ++i) CHECK(got[i] == doctest::Approx(s[i]).epsilon(1e-12).scale(1.0));
  Svd d = svd(m);
  CHECK(d.U.shape() == Shape{7, 5});
  CHECK(d.Vt.shape() == Shape{5, 5});
  Tensor rebuilt = matmul(mul(d.U, d.S), d.Vt);
  CHECK(max_abs_diff(rebuilt, m) < 1e-12);
  // Wide matrices and f32 inputs too.
  Tensor wide = with_spectrum(3, 6, {4.0, 1.0, 0.25}, 5);
  std::vector<double> w = singular_values(cast(wide, DType::f32)).to_vector<double>();
  CHECK(w[0] == doctest::Approx(4.0).epsilon(1e-6));
  CHECK(w[2] == doctest::Approx(0.25).epsilon(1e-5));
  CHECK(error_of([&] { singular_values(zeros({3})); }).find("expected a floating-point 2-D matrix, got [3]") !=
        std::string::npos);
}

TEST_CASE("spectrum: normalised spectrum, entropy, effective rank and energy shares") {
  // Flat spectrum of 4 equal values: H = ln 4, effective rank 4, top-1 energy 1/4.
  SpectrumStats flat = spectrum_stats(with_spectrum(6, 4, {2, 2, 2, 2}, 7));
  CHECK(flat.entropy == doctest::Approx(std::log(4.0)).epsilon(1e-10));
  CHECK(flat.effective_rank == doctest::Approx(4.0).epsilon(1e-10));
  CHECK(flat.top_k_energy(1) == doctest::Approx(0.25).epsilon(1e-10));
  CHECK(flat.top_k_energy(9) == doctest::Approx(1.0));
  // Rank one: all in the first value.
  SpectrumStats one = spectrum_stats(with_spectrum(5, 5, {3, 0, 0, 0, 0}, 9));
  CHECK(one.entropy == doctest::Approx(0.0).scale(1.0).epsilon(1e-9));
  CHECK(one.effective_rank == doctest::Approx(1.0).epsilon(1e-9));
  CHECK(one.top_k_energy(1) == doctest::Approx(1.0).epsilon(1e-12));
  // By hand: s = (3, 1): p = (3/4, 1/4), energy (9/10, 1/10).
  SpectrumStats two = spectrum_stats(std::vector<double>{1.0, 3.0});
  CHECK(two.singular_values == std::vector<double>{3.0, 1.0});
  CHECK(two.normalized[0] == doctest::Approx(0.75));
  double h = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  CHECK(two.entropy == doctest::Approx(h));
  CHECK(two.effective_rank == doctest::Approx(std::exp(h)));
  CHECK(two.cumulative_energy[0] == doctest::Approx(0.9));
  CHECK(two.cumulative_energy[1] == doctest::Approx(1.0));
  CHECK(error_of([&] { spectrum_stats(std::vector<double>{1.0, -2.0}); }).find("-2") != std::string::npos);
}

TEST_CASE("spectrum: subspace similarity phi of constructed subspaces") {
  Tensor q = random_orthogonal(8, 11);
  // U1 = first 3 columns, U2 = columns 2..5: span overlap is 1 direction (column 2).
  Tensor u1 = q.narrow(1, 0, 3).contiguous(), u2 = q.narrow(1, 2, 4).contiguous();
  CHECK(subspace_similarity(u1, u1, 3, 3) == doctest::Approx(1.0));
  CHECK(subspace_similarity(u1, u2, 3, 4) == doctest::Approx(1.0 / 3.0));
  CHECK(subspace_similarity(u1, u2, 2, 4) == doctest::Approx(0.0).scale(1.0).epsilon(1e-12));
  CHECK(subspace_similarity(u1, u2, 3, 1) == doctest::Approx(1.0));
  CHECK(error_of([&] { subspace_similarity(u1, u2, 4, 1); }).find("(4, 1) outside [1, 3] x [1, 4]") !=
        std::string::npos);
}

TEST_CASE("spectrum: a LoRA update has rank <= r; a MultiLoRA sum of n modules has rank <= sum r_i") {
  Generator gen(2);
  LoraConfig lc;
  lc.r = 4;
  LoraLinear lora(random_tensor({16, 12}, 1), Tensor(), lc, gen);
  Tensor b = lora.lora_B().data();
  b.copy_(random_tensor({16, 4}, 2));
  SpectrumStats ls = spectrum_stats(lora.delta_weight());
  CHECK(ls.singular_values[3] > 1e-6);
  CHECK(ls.singular_values[4] < 1e-10);
  CHECK(ls.effective_rank <= 4.0 + 1e-6);
  MultiLoraConfig mc;
  mc.r = 6;
  mc.n_modules = 3;
  mc.scale_init = 0.3;
  MultiLoraLinear multi(random_tensor({16, 12}, 3), Tensor(), mc, gen);
  SpectrumStats ms = spectrum_stats(multi.delta_weight());
  CHECK(ms.singular_values[5] > 1e-8);
  CHECK(ms.singular_values[6] < 1e-10);
}

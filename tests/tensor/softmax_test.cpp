// Softmax and log-softmax (tensor/ops_reduce.cpp, tensor/kernels/cpu/softmax.cpp): values, rows
// summing to one, stability at extreme values, any dimension and strided inputs, dtypes, and the
// backward passes against central finite differences in f64.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tensor/ops.h"

using namespace mlr;

namespace {


const float kInf = std::numeric_limits<float>::infinity();

void check_values(const Tensor& t, const std::vector<double>& expected, double tol = 1e-6) {
  std::vector<double> got = t.to_vector<double>();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element ", i, ": got ", got[i], ", expected ", expected[i]);
    if (std::isnan(expected[i])) {
      CHECK(std::isnan(got[i]));
    } else {
      CHECK(std::fabs(got[i] - expected[i]) <= tol * std::max(1.0, std::fabs(expected[i])));
    }
  }
}

// Reference softmax along `dim` computed in double from the definition.
std::vector<double> reference_softmax(const Tensor& x, int64_t dim, bool log) {
  Tensor xd = x.to(DType::f64).contiguous();
  std::vector<double> v = xd.to_vector<double>();
  const Shape& s = xd.shape();
  int64_t inner = 1;
  for (size_t d = static_cast<size_t>(dim) + 1; d < s.size(); ++d) inner *= s[d];
  const int64_t n = s[dim], outer = xd.numel() / (n * inner);
  std::vector<double> out(v.size());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      auto at = [&](int64_t k) { return (o * n + k) * inner + i; };
      double m = -INFINITY, z = 0;
      for (int64_t k = 0; k < n; ++k) m = std::max(m, v[at(k)]);
      for (int64_t k = 0; k < n; ++k) z += std::exp(v[at(k)] - m);
      for (int64_t k = 0; k < n; ++k) out[at(k)] = log ? v[at(k)] - m - std::log(z) : std::exp(v[at(k)] - m) / z;
    }
  return out;
}

}  // namespace

TEST_CASE("softmax and log_softmax: values and rows that sum to one") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dt);
    const double tol = dt == DType::f64 ? 1e-14 : 1e-6;
    Tensor x = from_vector<double>({1, 2, 3, 0, 0, 0}, {2, 3}, dt);
    Tensor y = softmax(x, -1);
    CHECK(y.dtype() == dt);
    CHECK(y.shape() == Shape{2, 3});
    check_values(y, {0.09003057317038046, 0.24472847105479767, 0.6652409557748219, 1.0 / 3, 1.0 / 3, 1.0 / 3}, tol);
    check_values(sum(y, {1}), {1, 1}, tol);
    check_values(log_softmax(x, 1), {std::log(0.09003057317038046), std::log(0.24472847105479767),
                                     std::log(0.6652409557748219), -std::log(3.0), -std::log(3.0), -std::log(3.0)},
                 tol);
    // along dim 0
    check_values(softmax(x, 0), {1 / (1 + std::exp(-1.0)), 1 / (1 + std::exp(-2.0)), 1 / (1 + std::exp(-3.0)),
                                 1 / (1 + std::exp(1.0)), 1 / (1 + std::exp(2.0)), 1 / (1 + std::exp(3.0))},
                 tol);
  }
}

TEST_CASE("softmax is stable at extreme values") {
  Tensor x = from_vector<float>({1e4f, 1e4f - 1, -1e4f, 0}, {1, 4});
  Tensor y = softmax(x, 1);
  const double e = std::exp(-1.0);
  check_values(y, {1 / (1 + e), e / (1 + e), 0, 0});
  check_values(log_softmax(x, 1), {-std::log1p(e), -1 - std::log1p(e), -2e4 - std::log1p(e), -1e4 - std::log1p(e)},
               1e-6);
  check_values(softmax(from_vector<float>({-1e4f, -1e4f}, {2}), 0), {0.5, 0.5});
  // masked positions (-inf) get exactly 0 / -inf
  check_values(softmax(from_vector<float>({0, -kInf, 0}, {3}), 0), {0.5, 0, 0.5});
  CHECK(log_softmax(from_vector<float>({0, -kInf}, {2}), 0).to_vector<float>()[1] == -kInf);
  // a row of all -inf has no softmax: NaN, as torch
  check_values(softmax(from_vector<float>({-kInf, -kInf}, {2}), 0), {NAN, NAN});
  // a NaN poisons its row only
  std::vector<float> r = softmax(from_vector<float>({NAN, 1, 1, 1}, {2, 2}), 1).to_vector<float>();
  CHECK(std::isnan(r[0]));
  CHECK(std::isnan(r[1]));
  CHECK(r[2] == 0.5f);
}

TEST_CASE("softmax along any dimension of strided inputs matches the definition") {
  Generator gen(3);
  Tensor base = randn({4, 5, 6}, gen, DType::f64);
  for (const Tensor& x : {base, base.permute({2, 0, 1}), base.slice(2, 0, 6, 2), base.select(1, 3).unsqueeze(0).expand({3, 4, 6})}) {
    for (int64_t d = 0; d < x.dim(); ++d) {
      CAPTURE(d);
      CAPTURE(shape_str(x.shape()));
      check_values(softmax(x, d), reference_softmax(x, d, false), 1e-13);
      check_values(log_softmax(x, d), reference_softmax(x, d, true), 1e-13);
      check_values(sum(softmax(x, d), {d}), std::vector<double>(static_cast<size_t>(x.numel() / x.size(d)), 1.0), 1e-14);
    }
  }
  // wide rows (threaded over rows, pairwise row sums) in f32
  Tensor wide = mul(randn({8, 100000}, gen), 5.0);
  check_values(sum(softmax(wide, 1), {1}), std::vector<double>(8, 1.0), 1e-5);
  std::vector<double> got = softmax(wide, 1).to_vector<double>(), want = reference_softmax(wide, 1, false);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(got[i] - want[i]) / want[i]);
  CHECK(worst < 1e-5);  // relative, element by element (values go down to ~1e-30)
}

TEST_CASE("softmax dtypes: bf16/f16 compute in f32; integers become f32; 0-d and empty inputs") {
  Tensor x = from_vector<float>({1, 2, 3}, {3});
  const std::vector<double> want = {0.09003057317038046, 0.24472847105479767, 0.6652409557748219};
  for (DType dt : {DType::bf16, DType::f16}) {
    CAPTURE(dt);
    Tensor y = softmax(x.to(dt), 0);
    CHECK(y.dtype() == dt);
    check_values(y, want, dt == DType::bf16 ? 4e-3 : 5e-4);
    check_values(log_softmax(x.to(dt), 0), reference_softmax(x, 0, true), dt == DType::bf16 ? 8e-3 : 1e-3);
  }
  Tensor yi = softmax(from_vector<int64_t>({1, 2, 3}, {3}), 0);
  CHECK(yi.dtype() == DType::f32);
  check_values(yi, want);
  Tensor s = softmax(scalar_tensor(7.0), 0);
  CHECK(s.dim() == 0);
  CHECK(s.item<float>() == 1.0f);
  CHECK(log_softmax(scalar_tensor(7.0), -1).item<float>() == 0.0f);
  CHECK(softmax(zeros({0, 4}), 1).shape() == Shape{0, 4});
  CHECK(softmax(zeros({3, 0}), 1).shape() == Shape{3, 0});
}

TEST_CASE("softmax_backward and log_softmax_backward match finite differences in f64") {
  // L(x) = sum(w * f(x)); dL/dx by central differences against backward(g = w).
  Generator gen(11);
  for (int64_t dim : {0, 1, 2}) {
    CAPTURE(dim);
    Tensor x = randn({3, 4, 5}, gen, DType::f64);
    Tensor w = randn({3, 4, 5}, gen, DType::f64);
    for (bool log : {false, true}) {
      CAPTURE(log);
      auto f = [&](const Tensor& t) { return log ? log_softmax(t, dim) : softmax(t, dim); };
      Tensor y = f(x);
      Tensor dx = log ? log_softmax_backward(w, y, dim) : softmax_backward(w, y, dim);
      CHECK(dx.shape() == x.shape());
      CHECK(dx.dtype() == DType::f64);
      std::vector<double> xv = x.to_vector<double>(), wv = w.to_vector<double>(), got = dx.to_vector<double>();
      const double h = 1e-6;
      double worst = 0;
      for (size_t i = 0; i < xv.size(); ++i) {
        std::vector<double> xp = xv, xm = xv;
        xp[i] += h;
        xm[i] -= h;
        auto loss = [&](const std::vector<double>& v) { return sum(mul(f(from_vector(v, x.shape())), w)).item<double>(); };
        const double fd = (loss(xp) - loss(xm)) / (2 * h);
        worst = std::max(worst, std::fabs(fd - got[i]));
      }
      CHECK(worst < 1e-7);
    }
  }
  // strided g and y (transposed views) give the same result as contiguous ones
  Tensor x = randn({6, 7}, gen, DType::f64);
  Tensor g = randn({7, 6}, gen, DType::f64).t();
  Tensor yt = softmax(x.t().contiguous(), 0).t();  // softmax along dim 1 of x, as a strided view
  CHECK(allclose(softmax_backward(g, yt, 1), softmax_backward(g.contiguous(), yt.contiguous(), 1), 0, 1e-15));
  CHECK(allclose(log_softmax_backward(g, yt, 1), log_softmax_backward(g.contiguous(), yt.contiguous(), 1), 0, 1e-15));
  // known values: softmax of [0, 0] is [0.5, 0.5]; g = [1, 0] gives dx = [0.25, -0.25]
  Tensor y2 = from_vector<float>({0.5f, 0.5f}, {2});
  check_values(softmax_backward(from_vector<float>({1, 0}, {2}), y2, 0), {0.25, -0.25});
  check_values(log_softmax_backward(from_vector<float>({1, 0}, {2}), log(y2), 0), {0.5, -0.5});
  check_values(softmax_backward(from_vector<float>({1, 0}, {2}, DType::bf16), y2.to(DType::bf16), 0), {0.25, -0.25}, 0);
}

TEST_CASE("softmax error messages") {
  CHECK_ERROR_CONTAINS(softmax(zeros({2, 3}), 2), "softmax: dimension 2 out of range for a 2-d tensor");
  CHECK_ERROR_CONTAINS(log_softmax(zeros({2, 3}), -3), "log_softmax: dimension -3 out of range");
  CHECK_ERROR_CONTAINS(softmax_backward(zeros({2, 3}), zeros({2, 4}), 1),
                       "softmax_backward: g shape [2, 3] and y shape [2, 4] differ");
  CHECK_ERROR_CONTAINS(log_softmax_backward(zeros({2}), Tensor(), 0), "log_softmax_backward: y is an undefined tensor");
}

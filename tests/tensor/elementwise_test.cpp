// Elementwise ops (tensor/ops_elementwise.cpp, tensor/kernels/cpu/elementwise.cpp): values against
// hand-computed results in several dtypes, broadcasting, strided inputs, the promotion table,
// in-place ops, derivative helpers against finite differences, and error messages.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <cmath>
#include <functional>
#include <set>
#include <limits>
#include <string>
#include <vector>

#include "tensor/op_table.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {


const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

// Every element of t (row-major) equals expected within tol; NaN matches NaN.
void check_values(const Tensor& t, const std::vector<double>& expected, double tol = 1e-6) {
  std::vector<double> got = t.to_vector<double>();
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    INFO("element ", i, ": got ", got[i], ", expected ", expected[i]);
    if (std::isnan(expected[i])) {
      CHECK(std::isnan(got[i]));
    } else if (std::isinf(expected[i])) {
      CHECK(got[i] == expected[i]);
    } else {
      CHECK(std::fabs(got[i] - expected[i]) <= tol * std::max(1.0, std::fabs(expected[i])));
    }
  }
}

Tensor f64(std::vector<double> v, Shape s) { return from_vector(v, s); }
Tensor f32(std::vector<float> v, Shape s) { return from_vector(v, s); }

}  // namespace

TEST_CASE("binary arithmetic: values in f32 and f64") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dt);
    Tensor a = from_vector<double>({1, -2, 3.5, 4}, {2, 2}, dt);
    Tensor b = from_vector<double>({2, 4, -0.5, 8}, {2, 2}, dt);
    check_values(add(a, b), {3, 2, 3, 12});
    check_values(sub(a, b), {-1, -6, 4, -4});
    check_values(mul(a, b), {2, -8, -1.75, 32});
    check_values(div(a, b), {0.5, -0.5, -7, 0.5});
    check_values(pow(abs(a), b), {1, 16, std::pow(3.5, -0.5), 65536});
    check_values(maximum(a, b), {2, 4, 3.5, 8});
    check_values(minimum(a, b), {1, -2, -0.5, 4});
    CHECK(add(a, b).dtype() == dt);
    CHECK(add(a, b).shape() == Shape{2, 2});
    // operators
    check_values(a + b, {3, 2, 3, 12});
    check_values(a - b, {-1, -6, 4, -4});
    check_values(a * b, {2, -8, -1.75, 32});
    check_values(a / b, {0.5, -0.5, -7, 0.5});
    check_values(-a, {-1, 2, -3.5, -4});
    check_values(2.0 * a, {2, -4, 7, 8});
  }
}

TEST_CASE("binary with a scalar") {
  Tensor a = f32({1, -2, 3, 0.5f}, {4});
  check_values(add(a, 1.5), {2.5, -0.5, 4.5, 2});
  check_values(sub(a, 1.0), {0, -3, 2, -0.5});
  check_values(mul(a, -2.0), {-2, 4, -6, -1});
  check_values(div(a, 4.0), {0.25, -0.5, 0.75, 0.125});
  check_values(pow(a, 2.0), {1, 4, 9, 0.25});
  check_values(pow(abs(a), 0.5), {1, std::sqrt(2.0), std::sqrt(3.0), std::sqrt(0.5)});
  check_values(pow(a, 3.0), {1, -8, 27, 0.125});
  check_values(pow(a, -1.0), {1, -0.5, 1.0 / 3, 2});
  // f64 keeps the scalar in double precision
  Tensor d = f64({1.0}, {1});
  CHECK(add(d, 1e-12).item<double>() == 1.0 + 1e-12);
}

TEST_CASE("bf16 and f16 arithmetic computes in f32 and rounds once") {
  for (DType dt : {DType::bf16, DType::f16}) {
    CAPTURE(dt);
    Tensor a = from_vector<float>({1.5f, -2.0f, 0.25f, 3.0f}, {4}, dt);
    Tensor b = from_vector<float>({0.5f, 4.0f, 0.25f, -1.0f}, {4}, dt);
    Tensor s = add(a, b);
    CHECK(s.dtype() == dt);
    check_values(s, {2, 2, 0.5, 2});
    check_values(mul(a, b), {0.75, -8, 0.0625, -3});
    check_values(div(a, b), {3, -0.5, 1, -3});
    check_values(exp(from_vector<float>({0.0f, 1.0f}, {2}, dt)), {1, static_cast<float>(bf16(std::exp(1.0f)))},
                 dt == DType::bf16 ? 0 : 2e-3);
    CHECK(mul(a, 2.0).dtype() == dt);
  }
  // one rounding: the bf16 result is the f32 result of the bf16 inputs, rounded once
  std::vector<float> xs, ys;
  for (int k = 0; k < 64; ++k) {
    xs.push_back(static_cast<float>(bf16(0.37f * static_cast<float>(k) - 11.0f)));
    ys.push_back(static_cast<float>(bf16(1.0f / (1.0f + static_cast<float>(k)))));
  }
  Tensor xb = from_vector(xs, {64}, DType::bf16), yb = from_vector(ys, {64}, DType::bf16);
  std::vector<float> sum_b = add(xb, yb).to_vector<float>(), prod_b = mul(xb, yb).to_vector<float>();
  for (int k = 0; k < 64; ++k) {
    CHECK(sum_b[k] == static_cast<float>(bf16(xs[k] + ys[k])));
    CHECK(prod_b[k] == static_cast<float>(bf16(xs[k] * ys[k])));
  }
}

TEST_CASE("comparisons and logical ops give bool") {
  Tensor a = f32({1, 2, 3, kNaN}, {4});
  Tensor b = f32({1, 3, 2, kNaN}, {4});
  CHECK(eq(a, b).dtype() == DType::boolean);
  check_values(eq(a, b), {1, 0, 0, 0});
  check_values(ne(a, b), {0, 1, 1, 1});
  check_values(lt(a, b), {0, 1, 0, 0});
  check_values(le(a, b), {1, 1, 0, 0});
  check_values(gt(a, b), {0, 0, 1, 0});
  check_values(ge(a, b), {1, 0, 1, 0});
  check_values(eq(a, 2.0), {0, 1, 0, 0});
  check_values(ne(a, 2.0), {1, 0, 1, 1});
  check_values(lt(a, 2.5), {1, 1, 0, 0});
  check_values(le(a, 2.0), {1, 1, 0, 0});
  check_values(gt(a, 1.0), {0, 1, 1, 0});
  check_values(ge(a, 3.0), {0, 0, 1, 0});
  // the scalar is rounded to the tensor's dtype before comparing, as torch does
  CHECK(eq(from_vector<float>({0.1f}, {1}, DType::bf16), 0.1).item<bool>());
  CHECK(eq(f32({0.1f}, {1}), 0.1).item<bool>());
  // mixed dtypes compare in the promoted dtype
  check_values(eq(from_vector<int64_t>({1, 2}, {2}), f32({1.0f, 2.5f}, {2})), {1, 0});
  check_values(lt(from_vector<int64_t>({1, 2}, {2}), 1.5), {1, 0});
  Tensor p = from_vector<bool>({true, true, false, false}, {4});
  Tensor q = from_vector<bool>({true, false, true, false}, {4});
  check_values(logical_and(p, q), {1, 0, 0, 0});
  check_values(logical_or(p, q), {1, 1, 1, 0});
  check_values(logical_not(p), {0, 0, 1, 1});
  check_values(logical_and(f32({0, 2, -1, 0}, {4}), from_vector<int64_t>({1, 1, 0, 0}, {4})), {0, 1, 0, 0});
  check_values(logical_not(f32({0, 2}, {2})), {1, 0});
}

TEST_CASE("broadcasting: size-1 dims, missing leading dims, 0-d tensors") {
  Tensor m = f32({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor row = f32({10, 20, 30}, {3});
  Tensor col = f32({100, 200}, {2, 1});
  Tensor r = add(m, row);
  CHECK(r.shape() == Shape{2, 3});
  check_values(r, {11, 22, 33, 14, 25, 36});
  check_values(add(row, m), {11, 22, 33, 14, 25, 36});
  check_values(add(m, col), {101, 102, 103, 204, 205, 206});
  Tensor outer = mul(col, f32({1, 2, 3}, {1, 3}));
  CHECK(outer.shape() == Shape{2, 3});
  check_values(outer, {100, 200, 300, 200, 400, 600});
  Tensor s = scalar_tensor(2.0);
  CHECK(mul(m, s).shape() == Shape{2, 3});
  check_values(mul(s, m), {2, 4, 6, 8, 10, 12});
  Tensor ss = add(s, scalar_tensor(3.0));
  CHECK(ss.dim() == 0);
  CHECK(ss.item<float>() == 5.0f);
  // [3, 1, 2] with [4, 1] -> [3, 4, 2]
  Tensor a3 = arange(0.0, 6.0, 1.0, DType::f32).view({3, 1, 2});
  Tensor b2 = arange(0.0, 4.0, 1.0, DType::f32).view({4, 1});
  Tensor c = add(a3, b2);
  CHECK(c.shape() == Shape{3, 4, 2});
  std::vector<double> expect;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j)
      for (int k = 0; k < 2; ++k) expect.push_back((i * 2 + k) + j);
  check_values(c, expect);
  // zero-size broadcast
  CHECK(add(f32({}, {0, 3}), row).shape() == Shape{0, 3});
}

TEST_CASE("non-contiguous inputs: transposed, stepped slices, expanded, and large (threaded) sizes") {
  Tensor m = arange(0.0, 12.0, 1.0, DType::f32).view({3, 4});
  Tensor t = m.t();  // [4, 3], strides [1, 4]
  check_values(add(t, 0.5), {0.5, 4.5, 8.5, 1.5, 5.5, 9.5, 2.5, 6.5, 10.5, 3.5, 7.5, 11.5});
  check_values(mul(t, t), {0, 16, 64, 1, 25, 81, 4, 36, 100, 9, 49, 121});
  Tensor stepped = m.slice(1, 0, 4, 2);  // columns 0 and 2
  check_values(sub(stepped, f32({1, 1}, {2})), {-1, 1, 3, 5, 7, 9});
  check_values(exp(stepped.slice(0, 0, 1)), {1, std::exp(2.0)}, 1e-6);
  Tensor e = f32({1, 2, 3}, {1, 3}).expand({4, 3});
  check_values(add(e, t), {1, 6, 11, 2, 7, 12, 3, 8, 13, 4, 9, 14});
  check_values(neg(e), {-1, -2, -3, -1, -2, -3, -1, -2, -3, -1, -2, -3});
  // threaded paths: one long run, and many rows of a transposed view
  const int64_t n = 300001;
  Tensor big = arange(0.0, static_cast<double>(n), 1.0, DType::f64);
  std::vector<double> got = mul(big, big).to_vector<double>();
  bool all = true;
  for (int64_t i = 0; i < n; ++i) all = all && got[i] == static_cast<double>(i) * static_cast<double>(i);
  CHECK(all);
  Tensor bt = big.narrow(0, 0, 300000).view({600, 500}).t();
  std::vector<double> gt = add(bt, 1.0).contiguous().to_vector<double>();
  all = true;
  for (int64_t i = 0; i < 500; ++i)
    for (int64_t j = 0; j < 600; ++j) all = all && gt[i * 600 + j] == static_cast<double>(j * 500 + i) + 1.0;
  CHECK(all);
}

TEST_CASE("promotion table") {
  auto ones_of = [](DType t) { return ones({2}, t); };
  struct Row {
    DType a, b, expected;
  };
  const std::vector<Row> rows = {
      {DType::f32, DType::f64, DType::f64}, {DType::bf16, DType::f16, DType::f32},
      {DType::bf16, DType::f32, DType::f32}, {DType::i64, DType::bf16, DType::bf16},
      {DType::i32, DType::i64, DType::i64}, {DType::boolean, DType::i32, DType::i32},
      {DType::boolean, DType::f16, DType::f16}, {DType::i32, DType::i32, DType::i32},
  };
  for (const Row& r : rows) {
    CAPTURE(r.a);
    CAPTURE(r.b);
    CHECK(add(ones_of(r.a), ones_of(r.b)).dtype() == r.expected);
    CHECK(mul(ones_of(r.b), ones_of(r.a)).dtype() == r.expected);
    CHECK(eq(ones_of(r.a), ones_of(r.b)).dtype() == DType::boolean);
  }
  // bool + bool stays bool (logical or), like torch; maximum/minimum of bool are or/and
  Tensor p = from_vector<bool>({true, false, true}, {3});
  Tensor q = from_vector<bool>({true, false, false}, {3});
  CHECK(add(p, q).dtype() == DType::boolean);
  check_values(add(p, q), {1, 0, 1});
  check_values(mul(p, q), {1, 0, 0});
  // integer arithmetic stays integer and exact
  Tensor i = from_vector<int64_t>({7, -7, 3000000000LL}, {3});
  Tensor j = from_vector<int64_t>({2, 2, 3}, {3});
  CHECK(add(i, j).dtype() == DType::i64);
  CHECK(mul(i, j).to_vector<int64_t>() == std::vector<int64_t>{14, -14, 9000000000LL});
  CHECK(pow(j, j).to_vector<int64_t>() == std::vector<int64_t>{4, 4, 27});
  CHECK(maximum(i, j).to_vector<int64_t>() == std::vector<int64_t>{7, 2, 3000000000LL});
  // division of integers is true division in f32
  Tensor d = div(i, j);
  CHECK(d.dtype() == DType::f32);
  check_values(d, {3.5, -3.5, 1e9});
  CHECK(div(from_vector<int32_t>({1}, {1}), 4.0).dtype() == DType::f32);
  CHECK(div(from_vector<int32_t>({1}, {1}), 4.0).item<float>() == 0.25f);
  // scalars
  CHECK(mul(ones({2}, DType::f16), 2.5).dtype() == DType::f16);
  CHECK(add(ones({2}, DType::i32), 2.0).dtype() == DType::i32);
  CHECK(add(ones({2}, DType::i32), 0.5).dtype() == DType::f32);
  check_values(add(from_vector<int32_t>({1, 2}, {2}), 0.5), {1.5, 2.5});
  CHECK(add(ones({2}, DType::boolean), 1.0).dtype() == DType::i64);
  CHECK(pow(from_vector<int64_t>({3}, {1}), 2.0).dtype() == DType::i64);
  CHECK(pow(from_vector<int64_t>({3}, {1}), 2.0).item<int64_t>() == 9);
  CHECK(pow(from_vector<int64_t>({4}, {1}), 0.5).dtype() == DType::f32);
  CHECK(pow(from_vector<int64_t>({4}, {1}), 0.5).item<float>() == 2.0f);
  // unary: float math on integers and bool computes in f32; the rest keeps the dtype
  CHECK(exp(from_vector<int64_t>({0, 1}, {2})).dtype() == DType::f32);
  check_values(exp(from_vector<int64_t>({0, 1}, {2})), {1, std::exp(1.0)});
  check_values(sqrt(from_vector<bool>({true, false}, {2})), {1, 0});
  CHECK(sigmoid(from_vector<int32_t>({0}, {1})).item<float>() == 0.5f);
  CHECK(neg(from_vector<int32_t>({3}, {1})).dtype() == DType::i32);
  CHECK(abs(from_vector<int64_t>({-3}, {1})).item<int64_t>() == 3);
  CHECK(square(from_vector<int32_t>({-3}, {1})).item<int32_t>() == 9);
  CHECK(relu(from_vector<int32_t>({-3, 4}, {2})).to_vector<int32_t>() == std::vector<int32_t>{0, 4});
  CHECK(sign(from_vector<int64_t>({-3, 0, 5}, {3})).to_vector<int64_t>() == std::vector<int64_t>{-1, 0, 1});
  CHECK(exp(ones({1}, DType::bf16)).dtype() == DType::bf16);
  CHECK(exp(ones({1}, DType::f64)).dtype() == DType::f64);
}

TEST_CASE("unary ops: values in f32 and f64") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dt);
    const double tol = dt == DType::f64 ? 1e-12 : 1e-6;
    const std::vector<double> xs = {-2.0, -0.5, 0.0, 0.75, 3.0};
    Tensor x = from_vector<double>(xs, {5}, dt);
    auto map = [&](const std::function<double(double)>& f) {
      std::vector<double> r;
      for (double v : xs) r.push_back(f(v));
      return r;
    };
    auto sig = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
    check_values(neg(x), map([](double v) { return -v; }), tol);
    check_values(abs(x), {2, 0.5, 0, 0.75, 3}, tol);
    check_values(sign(x), {-1, -1, 0, 1, 1}, tol);
    check_values(exp(x), map([](double v) { return std::exp(v); }), tol);
    check_values(square(x), {4, 0.25, 0, 0.5625, 9}, tol);
    check_values(sin(x), map([](double v) { return std::sin(v); }), tol);
    check_values(cos(x), map([](double v) { return std::cos(v); }), tol);
    check_values(tanh(x), map([](double v) { return std::tanh(v); }), tol);
    check_values(sigmoid(x), map(sig), tol);
    check_values(relu(x), {0, 0, 0, 0.75, 3}, tol);
    check_values(silu(x), map([&](double v) { return v * sig(v); }), tol);
    check_values(gelu(x), map([](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); }), tol);
    check_values(gelu_tanh(x), map([](double v) {
                   return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
                 }),
                 tol);
    Tensor pos = from_vector<double>({0.25, 1.0, 4.0}, {3}, dt);
    check_values(log(pos), {std::log(0.25), 0, std::log(4.0)}, tol);
    check_values(sqrt(pos), {0.5, 1, 2}, tol);
    check_values(rsqrt(pos), {2, 1, 0.5}, tol);
    check_values(reciprocal(pos), {4, 1, 0.25}, tol);
  }
  // known constants
  CHECK(gelu(f64({1.0}, {1})).item<double>() == doctest::Approx(0.8413447460685429).epsilon(1e-14));
  CHECK(gelu_tanh(f64({1.0}, {1})).item<double>() == doctest::Approx(0.8411919906082768).epsilon(1e-14));
  // extremes: no NaN from overflowing exp
  check_values(sigmoid(f32({-1000, 1000}, {2})), {0, 1});
  check_values(silu(f32({-1000, 1000}, {2})), {0, 1000});
  check_values(log(f32({0, -1}, {2})), {-kInf, kNaN});
  check_values(sqrt(f32({-1}, {1})), {kNaN});
  // NaN passes through sign, relu, abs
  check_values(sign(f32({kNaN}, {1})), {kNaN});
  check_values(relu(f32({kNaN}, {1})), {kNaN});
  check_values(abs(f32({kNaN, -kInf}, {2})), {kNaN, kInf});
  // bf16 / f16 unary
  check_values(sqrt(from_vector<float>({4.0f, 9.0f}, {2}, DType::bf16)), {2, 3}, 0);
  check_values(tanh(from_vector<float>({0.5f}, {1}, DType::f16)), {std::tanh(0.5)}, 1e-3);
}

TEST_CASE("maximum and minimum propagate NaN") {
  Tensor a = f32({kNaN, 1, 2}, {3});
  Tensor b = f32({1, kNaN, 3}, {3});
  check_values(maximum(a, b), {kNaN, kNaN, 3});
  check_values(minimum(a, b), {kNaN, kNaN, 2});
}

TEST_CASE("clamp, isnan, isfinite") {
  Tensor x = f32({-3, -1, 0.5, 2, kNaN}, {5});
  check_values(clamp(x, -1.5, 1.0), {-1.5, -1, 0.5, 1, kNaN});
  check_values(clamp(x, std::nullopt, 0.0), {-3, -1, 0, 0, kNaN});
  check_values(clamp(x, 0.0, std::nullopt), {0, 0, 0.5, 2, kNaN});
  check_values(clamp(x, 2.0, 1.0), {1, 1, 1, 1, kNaN});  // min > max: everything is max, as torch
  Tensor i = from_vector<int64_t>({-5, 0, 7}, {3});
  CHECK(clamp(i, -2.0, 3.0).dtype() == DType::i64);
  CHECK(clamp(i, -2.0, 3.0).to_vector<int64_t>() == std::vector<int64_t>{-2, 0, 3});
  CHECK(clamp(i, -2.5, std::nullopt).dtype() == DType::f32);
  check_values(clamp(i, -2.5, std::nullopt), {-2.5, 0, 7});
  check_values(clamp(from_vector<float>({-3.0f, 9.0f}, {2}, DType::bf16), -1.0, 1.0), {-1, 1});
  Tensor y = f64({1, kNaN, kInf, -kInf}, {4});
  CHECK(isnan(y).dtype() == DType::boolean);
  check_values(isnan(y), {0, 1, 0, 0});
  check_values(isfinite(y), {1, 0, 0, 0});
  check_values(isnan(from_vector<int64_t>({1}, {1})), {0});
  check_values(isfinite(from_vector<int64_t>({1}, {1})), {1});
  check_values(isnan(from_vector<float>({kNaN, 1}, {2}, DType::f16)), {1, 0});
}

namespace {
// Values of a table domain, as doubles exactly representable in bf16 and f16 (so that every dtype
// sees the same inputs).
std::vector<double> domain_values(InputDomain domain) {
  switch (domain) {
    case InputDomain::normal: return {-2.0, -1.25, -0.5, -0.125, 0.0, 0.375, 0.75, 1.5, 2.0};
    case InputDomain::positive: return {0.5, 0.625, 0.875, 1.0, 1.25, 1.5, 1.75, 2.0, 0.75};
    case InputDomain::nonzero: return {-1.5, -1.0, -0.625, -0.25, 0.25, 0.5, 0.875, 1.25, 1.5};
    case InputDomain::specials: {
      const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
      return {nan, inf, -inf, 0.0, -0.0, -1.5, 0.5, 0.5, 2.0};
    }
  }
  return {};
}

double tolerance_of(const OpTolerance& tol, DType t) {
  // Against an f64 reference, each dtype also rounds its result once: at least half an ulp.
  const DTypeTolerance d = t == DType::bf16 ? tol.bf16 : t == DType::f16 ? tol.f16 : tol.f32;
  const double half_ulp = t == DType::bf16 ? 4e-3 : t == DType::f16 ? 5e-4 : 6e-8;
  return std::max(d.rtol, half_ulp);
}
}  // namespace

TEST_CASE("op table: names, order and the kinds of the result dtypes") {
  std::set<std::string> names;
  for (size_t i = 0; i < kUnaryOpCount; ++i) {
    CHECK(static_cast<size_t>(kUnaryOps[i].op) == i);
    CHECK(names.insert(kUnaryOps[i].name).second);
  }
  for (size_t i = 0; i < kBinaryOpCount; ++i) {
    CHECK(static_cast<size_t>(kBinaryOps[i].op) == i);
    CHECK(names.insert(kBinaryOps[i].name).second);
  }
  for (size_t i = 0; i < kUnaryBackwardOpCount; ++i) CHECK(static_cast<size_t>(kUnaryBackwardOps[i].op) == i);
  for (size_t i = 0; i < kReduceOpCount; ++i) CHECK(static_cast<size_t>(kReduceOps[i].op) == i);
  // The kind column is what the front-ends do: same keeps the dtype, floating computes integers in
  // f32, predicates give bool.
  auto expected = [](OpKind kind, DType input) {
    if (kind == OpKind::predicate) return DType::boolean;
    return kind == OpKind::floating && !is_floating(input) ? DType::f32 : input;
  };
  for (const UnaryOpInfo& op : kUnaryOps) {
    for (DType t : {DType::f32, DType::bf16, DType::i32, DType::i64}) {
      INFO("unary ", op.name, " on ", t);
      Tensor x = from_vector<double>(domain_values(op.inputs), {9}, DType::f64).to(t);
      CHECK(apply(op.op, x).dtype() == expected(op.kind, t));
    }
  }
  for (const BinaryOpInfo& op : kBinaryOps) {
    for (DType t : {DType::f32, DType::f16, DType::i32, DType::i64}) {
      INFO("binary ", op.name, " on ", t);
      Tensor a = from_vector<double>(domain_values(op.a_inputs), {9}, DType::f64).to(t);
      Tensor b = from_vector<double>(domain_values(op.b_inputs), {9}, DType::f64).to(t);
      CHECK(apply(op.op, a, b).dtype() == expected(op.kind, t));
    }
  }
}

TEST_CASE("every unary and binary op of the table: f32, bf16 and f16 agree with f64 on the CPU") {
  for (const UnaryOpInfo& op : kUnaryOps) {
    const Tensor x = from_vector<double>(domain_values(op.inputs), {3, 3}, DType::f64);
    const Tensor want = apply(op.op, x).to(DType::f64);
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      INFO("unary ", op.name, " in ", t);
      check_values(apply(op.op, x.to(t).t()).t().contiguous(), want.to_vector<double>(), tolerance_of(op.tol, t));
    }
  }
  for (const BinaryOpInfo& op : kBinaryOps) {
    const Tensor a = from_vector<double>(domain_values(op.a_inputs), {3, 3}, DType::f64);
    const Tensor b = from_vector<double>(domain_values(op.b_inputs), {3, 3}, DType::f64);
    const Tensor want = apply(op.op, a, b).to(DType::f64);
    for (DType t : {DType::f32, DType::bf16, DType::f16}) {
      INFO("binary ", op.name, " in ", t);
      check_values(apply(op.op, a.to(t), b.to(t)), want.to_vector<double>(), tolerance_of(op.tol, t));
    }
  }
}

TEST_CASE("every unary derivative of the table matches central finite differences in f64") {
  const std::vector<double> xs = {-3.0, -1.1, -0.2, 0.0, 0.4, 1.3, 2.7};
  const Shape s{static_cast<int64_t>(xs.size())};
  Tensor x = f64(xs, s);
  Tensor g = f64({0.3, -1.2, 0.7, 1.0, -0.4, 2.0, 0.9}, s);
  const double h = 1e-6;
  for (const UnaryBackwardOpInfo& op : kUnaryBackwardOps) {
    INFO("derivative ", op.function);
    const Tensor want = div(mul(sub(apply(op.forward, add(x, h)), apply(op.forward, sub(x, h))), g), 2 * h);
    const Tensor got = apply(op.op, g, op.saved == SavedTensor::output ? apply(op.forward, x) : x);
    INFO("max abs diff ", max_abs_diff(got, want));
    CHECK(got.dtype() == DType::f64);
    CHECK(allclose(got, want, 1e-6, 1e-8));
  }
  // broadcasting g, and f32 inputs
  Tensor gx = silu_backward(scalar_tensor(2.0, DType::f32), f32({0.0f, 1.0f}, {2}));
  const double s1 = 1.0 / (1.0 + std::exp(-1.0));
  check_values(gx, {1.0, 2.0 * s1 * (1 + 1.0 * (1 - s1))});
  CHECK(gx.dtype() == DType::f32);
  check_values(sigmoid_backward(from_vector<float>({1.0f}, {1}, DType::bf16), from_vector<float>({0.5f}, {1}, DType::bf16)),
               {0.25}, 0);
}

TEST_CASE("where and masked_fill") {
  Tensor cond = from_vector<bool>({true, false, false, true}, {2, 2});
  Tensor a = f32({1, 2, 3, 4}, {2, 2});
  Tensor b = f32({10, 20, 30, 40}, {2, 2});
  check_values(where(cond, a, b), {1, 20, 30, 4});
  check_values(where(cond, a, -1.0), {1, -1, -1, 4});
  // broadcasting of all three, and promotion of a and b
  Tensor c = from_vector<bool>({true, false}, {2, 1});
  Tensor w = where(c, f32({1, 2, 3}, {3}), from_vector<int64_t>({7}, {1}));
  CHECK(w.shape() == Shape{2, 3});
  CHECK(w.dtype() == DType::f32);
  check_values(w, {1, 2, 3, 7, 7, 7});
  Tensor wi = where(c, from_vector<int64_t>({1}, {1}), 0.5);
  CHECK(wi.dtype() == DType::f32);
  check_values(wi, {1, 0.5});
  // masked_fill: a causal mask with -inf, mask broadcast over a batch dimension, strided a
  Tensor scores = zeros({2, 3, 3});
  Tensor causal = gt(arange(3).view({3, 1}) * 0 + arange(3).view({1, 3}), arange(3).view({3, 1}));
  CHECK(causal.dtype() == DType::boolean);
  Tensor masked = masked_fill(scores, causal, -kInf);
  CHECK(masked.shape() == Shape{2, 3, 3});
  check_values(masked.select(0, 1), {0, -kInf, -kInf, 0, 0, -kInf, 0, 0, 0});
  Tensor mt = masked_fill(a.t(), from_vector<bool>({true, false}, {2}), 9.0);
  check_values(mt, {9, 3, 9, 4});
  // the fill value takes a's dtype
  Tensor mi = masked_fill(from_vector<int32_t>({1, 2}, {2}), from_vector<bool>({true, false}, {2}), 5.0);
  CHECK(mi.dtype() == DType::i32);
  CHECK(mi.to_vector<int32_t>() == std::vector<int32_t>{5, 2});
  check_values(masked_fill(from_vector<float>({1.0f, 2.0f}, {2}, DType::bf16), from_vector<bool>({false, true}, {2}), 0.5),
               {1, 0.5}, 0);
}

TEST_CASE("cast always copies and converts") {
  Tensor a = f32({1.7f, -2.5f, 0.0f}, {3});
  Tensor i = cast(a, DType::i64);
  CHECK(i.dtype() == DType::i64);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{1, -2, 0});
  Tensor same = cast(a, DType::f32);
  CHECK_FALSE(same.shares_storage(a));
  check_values(cast(a, DType::boolean), {1, 1, 0});
  check_values(cast(a.slice(0, 0, 3, 2), DType::f64), {1.7f, 0});
  CHECK(cast(a, DType::bf16).dtype() == DType::bf16);
}

TEST_CASE("add_ and mul_ in place") {
  Tensor a = f32({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor before = a;
  add_(a, f32({10, 20, 30}, {3}));  // broadcast b
  check_values(a, {11, 22, 33, 14, 25, 36});
  CHECK(a.shares_storage(before));
  add_(a, from_vector<double>({1.0}, {1}));  // dtype converted
  check_values(a, {12, 23, 34, 15, 26, 37});
  mul_(a, 0.5);
  check_values(a, {6, 11.5, 17, 7.5, 13, 18.5});
  // through a view: the base sees it
  Tensor base = zeros({3, 4});
  Tensor col = base.select(1, 2);
  add_(col, f32({1, 2, 3}, {3}));
  check_values(base, {0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0});
  // aliasing: x += x^T reads the original values
  Tensor x = f32({1, 2, 3, 4}, {2, 2});
  add_(x, x.t());
  check_values(x, {2, 5, 5, 8});
  Tensor y = f32({1, 2}, {2});
  add_(y, y);
  check_values(y, {2, 4});
  Tensor i = from_vector<int64_t>({1, 2}, {2});
  mul_(i, 3.0);
  CHECK(i.to_vector<int64_t>() == std::vector<int64_t>{3, 6});
  CHECK_ERROR_CONTAINS(mul_(i, 0.5), "mul_: multiplying a i64 tensor by 0.5 gives f32");
  Tensor e = f32({1}, {1}).expand({3});
  CHECK_ERROR_CONTAINS(add_(e, f32({1, 2, 3}, {3})), "add_: cannot write in place into a broadcast view");
  CHECK_ERROR_CONTAINS(add_(y, f32({1, 2, 3}, {3})), "add_: shape [3] does not broadcast to [2]");
}

TEST_CASE("elementwise error messages") {
  CHECK_ERROR_CONTAINS(add(zeros({2, 3}), zeros({4})),
                       "add: shapes [2, 3] and [4] cannot be broadcast (dimension 1: 3 vs 4)");
  CHECK_ERROR_CONTAINS(mul(zeros({2, 3}), zeros({3, 3})), "mul: shapes [2, 3] and [3, 3] cannot be broadcast");
  CHECK_ERROR_CONTAINS(where(zeros({2}), zeros({2}), zeros({2})), "where: cond has dtype f32, expected bool");
  CHECK_ERROR_CONTAINS(masked_fill(zeros({2, 4}), ones({3}, DType::boolean), 0.0),
                       "masked_fill: mask shape [3] does not broadcast to [2, 4]");
  CHECK_ERROR_CONTAINS(masked_fill(zeros({2, 4}), zeros({4}), 0.0), "masked_fill: mask has dtype f32, expected bool");
  // the mask may not enlarge a
  CHECK_ERROR_CONTAINS(masked_fill(zeros({4}), ones({2, 4}, DType::boolean), 0.0),
                       "masked_fill: mask shape [2, 4] does not broadcast to [4]");
  CHECK_ERROR_CONTAINS(sub(ones({2}, DType::boolean), ones({2}, DType::boolean)), "sub: both operands are bool");
  CHECK_ERROR_CONTAINS(neg(ones({2}, DType::boolean)), "neg: negating a bool tensor is not supported");
  CHECK_ERROR_CONTAINS(pow(ones({2}, DType::i64), -1.0), "pow: an integer tensor (i64) to a negative integer power");
  CHECK_ERROR_CONTAINS(add(Tensor(), zeros({2})), "add: a is an undefined tensor");
  CHECK_ERROR_CONTAINS(gelu_backward(zeros({2}), zeros({3})), "gelu_backward: shapes [2] and [3] cannot be broadcast");
  CHECK_ERROR_CONTAINS(clamp(zeros({2}), kNaN, 1.0), "clamp: a bound is NaN");
}

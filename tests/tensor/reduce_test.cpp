// Reductions (tensor/ops_reduce.cpp, tensor/kernels/cpu/reduce.cpp): sum, mean, amax, amin over
// dimension sets with and without keepdim, dtypes, strided inputs, accuracy of long sums, thread
// independence, argmax, logsumexp, sum_to, the comparison helpers, and error messages.
#include <doctest/doctest.h>

#include "tests/test_support.h"
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tensor/ops.h"

using namespace mlr;

namespace {


const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

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

// x[i, j, k] = i * 100 + j * 10 + k for shape [2, 3, 4]
Tensor cube(DType dt) { return from_vector<double>([] {
    std::vector<double> v;
    for (int i = 0; i < 2; ++i)
      for (int j = 0; j < 3; ++j)
        for (int k = 0; k < 4; ++k) v.push_back(i * 100 + j * 10 + k);
    return v;
  }(), {2, 3, 4}, dt); }

}  // namespace

TEST_CASE("sum and mean over dimension sets, with and without keepdim") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dt);
    Tensor x = cube(dt);
    // all dims: sum_i,j,k = 12 * (0 + 100) + 8 * (0 + 10 + 20) + 6 * (0 + 1 + 2 + 3) = 1200 + 240 + 36
    Tensor all = sum(x);
    CHECK(all.dim() == 0);
    CHECK(all.dtype() == dt);
    CHECK(all.item<double>() == 1476);
    CHECK(mean(x).item<double>() == doctest::Approx(1476.0 / 24));
    CHECK(sum(x, {}, true).shape() == Shape{1, 1, 1});
    // last dim: 4 * base + 6
    Tensor s2 = sum(x, {2});
    CHECK(s2.shape() == Shape{2, 3});
    check_values(s2, {6, 46, 86, 406, 446, 486});
    check_values(sum(x, {-1}, true), {6, 46, 86, 406, 446, 486});
    CHECK(sum(x, {-1}, true).shape() == Shape{2, 3, 1});
    // first dim: x[0] + x[1] = 100 + 2 (10 j + k)
    Tensor s0 = sum(x, {0});
    CHECK(s0.shape() == Shape{3, 4});
    check_values(s0, {100, 102, 104, 106, 120, 122, 124, 126, 140, 142, 144, 146});
    // dims {0, 2}: sum over i, k of i*100 + j*10 + k = 400 + 80 j + 12
    Tensor s02 = sum(x, {0, 2});
    CHECK(s02.shape() == Shape{3});
    check_values(s02, {412, 492, 572});
    CHECK(sum(x, {2, 0}, true).shape() == Shape{1, 3, 1});
    check_values(mean(x, {2, -3}), {412.0 / 8, 492.0 / 8, 572.0 / 8});
    // middle dim: sum over j = 3 * (100 i + k) + 30
    check_values(sum(x, {1}), {30, 33, 36, 39, 330, 333, 336, 339});
    check_values(mean(x, {1}, true), {10, 11, 12, 13, 110, 111, 112, 113});
    CHECK(mean(x, {1}, true).shape() == Shape{2, 1, 4});
  }
}

TEST_CASE("amax and amin: values, dtypes, NaN") {
  Tensor x = cube(DType::f32);
  check_values(amax(x, {2}), {3, 13, 23, 103, 113, 123});
  check_values(amin(x, {0, 1}), {0, 1, 2, 3});
  CHECK(amax(x).item<float>() == 123);
  CHECK(amin(x).item<float>() == 0);
  CHECK(amax(x, {1}, true).shape() == Shape{2, 1, 4});
  check_values(amax(from_vector<float>({-5, -2, -9}, {3})), {-2});
  check_values(amin(from_vector<float>({-kInf, 1}, {2})), {-kInf});
  // a NaN anywhere gives NaN, wherever it sits
  check_values(amax(from_vector<float>({1, kNaN, 3, 2, 5, kNaN}, {2, 3}), {1}), {kNaN, kNaN});
  check_values(amin(from_vector<float>({kNaN, 1, 3, 2, 5, 4}, {2, 3}), {1}), {kNaN, 2});
  check_values(amax(from_vector<float>({kNaN, 1, 3, 2, 5, 4}, {2, 3}), {0}), {kNaN, 5, 4});
  // integer dtypes keep their dtype and exact values
  Tensor i = from_vector<int64_t>({5, -3, 9000000000LL, 7}, {2, 2});
  CHECK(amax(i, {1}).dtype() == DType::i64);
  CHECK(amax(i, {1}).to_vector<int64_t>() == std::vector<int64_t>{5, 9000000000LL});
  CHECK(amin(i).item<int64_t>() == -3);
  CHECK(amax(from_vector<bool>({false, true}, {2})).item<bool>());
  CHECK(amax(from_vector<float>({1.5f, 2.5f}, {2}, DType::bf16)).dtype() == DType::bf16);
  CHECK(amax(from_vector<float>({1.5f, 2.5f}, {2}, DType::bf16)).item<float>() == 2.5f);
}

TEST_CASE("reduction dtypes: bool and integer sums give i64; bf16/f16 keep theirs") {
  Tensor b = from_vector<bool>({true, false, true, true}, {4});
  CHECK(sum(b).dtype() == DType::i64);
  CHECK(sum(b).item<int64_t>() == 3);
  Tensor i = from_vector<int32_t>({2000000000, 2000000000, -5}, {3});
  CHECK(sum(i).dtype() == DType::i64);
  CHECK(sum(i).item<int64_t>() == 3999999995LL);  // accumulated in i64: no overflow
  for (DType dt : {DType::bf16, DType::f16}) {
    CAPTURE(dt);
    Tensor h = from_vector<float>({1.5f, 2.25f, 3.0f, -0.75f}, {2, 2}, dt);
    CHECK(sum(h).dtype() == dt);
    check_values(sum(h), {6}, 0);
    check_values(sum(h, {0}), {4.5, 1.5}, 0);
    check_values(mean(h, {1}), {1.875, 1.125}, 0);
    // accumulated in f32 and rounded once: 256 ones + 0.5s would stall in a bf16 accumulator
    Tensor many = full({1000}, 1.0, dt);
    CHECK(sum(many).item<float>() == static_cast<float>(bf16(1000.0f)));
  }
}

TEST_CASE("reductions of strided inputs: transposed, stepped, expanded") {
  Tensor m = arange(0.0, 12.0, 1.0, DType::f32).view({3, 4});
  Tensor t = m.t();  // [4, 3]
  check_values(sum(t, {1}), {12, 15, 18, 21});
  check_values(sum(t, {0}), {6, 22, 38});
  check_values(amax(t, {0}, true), {3, 7, 11});
  Tensor stepped = m.slice(1, 1, 4, 2);  // columns 1, 3: [[1, 3], [5, 7], [9, 11]]
  check_values(sum(stepped, {0}), {15, 21});
  check_values(mean(stepped, {1}), {2, 6, 10});
  Tensor e = from_vector<float>({1, 2, 3}, {1, 3}).expand({5, 3});
  check_values(sum(e, {0}), {5, 10, 15});
  check_values(sum(e), {30});
  check_values(sum(from_vector<float>({2}, {1}).expand({7})), {14});
  // permuted 3-d input over two dims
  Tensor x = cube(DType::f64).permute({2, 0, 1});  // [4, 2, 3]
  check_values(sum(x, {0, 1}), {412, 492, 572});
  // per k: sum over i, j of 100 i + 10 j + k = 300 + 60 + 6 k
  check_values(sum(x, {1, 2}), {360, 366, 372, 378});
}

TEST_CASE("zero elements, 0-d inputs") {
  Tensor z = zeros({0, 3});
  check_values(sum(z, {0}), {0, 0, 0});
  check_values(mean(z, {0}), {kNaN, kNaN, kNaN});
  CHECK(sum(z).item<float>() == 0);
  CHECK(sum(z, {1}).shape() == Shape{0});
  CHECK(amax(z, {1}).shape() == Shape{0});  // nothing reduced over zero elements: fine
  CHECK_ERROR_CONTAINS(amax(z, {0}), "amax: cannot reduce over zero elements (shape [0, 3], dims [0])");
  CHECK_ERROR_CONTAINS(amin(z), "amin: cannot reduce over zero elements");
  Tensor s = scalar_tensor(4.5);
  CHECK(sum(s).item<float>() == 4.5f);
  CHECK(sum(s, {0}).dim() == 0);
  CHECK(mean(s, {-1}, true).item<float>() == 4.5f);
  CHECK(amax(s).item<float>() == 4.5f);
}

TEST_CASE("long sums are accurate: pairwise within rows, compensated across chunks") {
  const int64_t n = 1000000;
  CHECK(sum(ones({n})).item<float>() == 1e6f);
  CHECK(sum(ones({n}, DType::bf16)).item<float>() == static_cast<float>(bf16(1e6f)));
  // 0.1 is not representable: a naive f32 running sum of a million of them is off by ~1%.
  const double tenth = static_cast<double>(0.1f);
  const double exact = tenth * static_cast<double>(n);
  CHECK(std::fabs(sum(full({n}, 0.1)).item<float>() - exact) / exact < 1e-6);
  CHECK(std::fabs(mean(full({n}, 0.1)).item<float>() - tenth) / tenth < 1e-6);
  // a long row split into several 64K chunks, several rows (parallel over chunks)
  Tensor rows = full({3, 400000}, 0.1);
  for (double v : sum(rows, {1}).to_vector<double>()) CHECK(std::fabs(v - tenth * 400000) / (tenth * 400000) < 1e-6);
  // the column order: sum over the leading dim of [N, D]
  Tensor cols = full({300000, 5}, 0.1);
  for (double v : sum(cols, {0}).to_vector<double>()) CHECK(std::fabs(v - tenth * 300000) / (tenth * 300000) < 1e-6);
  // many outputs, each a strided column of a transposed view
  Tensor tc = full({2000, 300}, 0.1).t();
  for (double v : sum(tc, {1}).to_vector<double>()) CHECK(std::fabs(v - tenth * 2000) / (tenth * 2000) < 1e-6);
}

TEST_CASE("reductions give the same bits whatever the number of threads") {
  Generator gen(7);
  Tensor x = randn({5, 70000}, gen);
  Tensor y = randn({70000, 7}, gen);
  Tensor z = randn({1, 2000000}, gen);
  auto run = [&] {
    return std::vector<std::vector<float>>{sum(x, {1}).to_vector<float>(), sum(x).to_vector<float>(),
                                           sum(y, {0}).to_vector<float>(), sum(y, {1}).to_vector<float>(),
                                           mean(z).to_vector<float>(),
                                           amax(x, {1}).to_vector<float>(), logsumexp(x, 1).to_vector<float>()};
  };
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  auto one = run();
  omp_set_num_threads(std::max(threads, 2));
  auto many = run();
  omp_set_num_threads(threads);
  REQUIRE(one.size() == many.size());
  for (size_t k = 0; k < one.size(); ++k) {
    CAPTURE(k);
    CHECK(std::memcmp(one[k].data(), many[k].data(), one[k].size() * sizeof(float)) == 0);
  }
  // and the pairwise f32 sum is close to the f64 sum
  // (error bound of a pairwise sum: about log2(n) * eps * sum |x|; checked with a 20x margin)
  double ref = 0, ref_abs = 0;
  for (double v : z.to_vector<double>()) {
    ref += v;
    ref_abs += std::fabs(v);
  }
  CHECK(std::fabs(sum(z).item<float>() - ref) <= 1e-7 * ref_abs);
}

TEST_CASE("argmax: first maximum wins, NaN is the maximum") {
  Tensor x = from_vector<float>({1, 3, 3, 2, 5, 0, 5, 5}, {2, 4});
  Tensor a = argmax(x, 1);
  CHECK(a.dtype() == DType::i64);
  CHECK(a.shape() == Shape{2});
  CHECK(a.to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(argmax(x, -1, true).shape() == Shape{2, 1});
  CHECK(argmax(x, 0).to_vector<int64_t>() == std::vector<int64_t>{1, 0, 1, 1});
  CHECK(argmax(x.t(), 0).to_vector<int64_t>() == std::vector<int64_t>{1, 0});
  CHECK(argmax(from_vector<float>({1, kNaN, 7, kNaN}, {4}), 0).item<int64_t>() == 1);
  CHECK(argmax(from_vector<float>({-kInf, -kInf}, {2}), 0).item<int64_t>() == 0);
  CHECK(argmax(from_vector<int64_t>({-4, 9000000000LL, 3}, {3}), 0).item<int64_t>() == 1);
  CHECK(argmax(from_vector<bool>({false, true, true}, {3}), 0).item<int64_t>() == 1);
  CHECK(argmax(from_vector<float>({0.5f, 2.0f, 1.0f}, {3}, DType::bf16), 0).item<int64_t>() == 1);
  CHECK(argmax(scalar_tensor(3.0), 0).dim() == 0);
  CHECK(argmax(scalar_tensor(3.0), 0).item<int64_t>() == 0);
  // 3-d, middle dim
  Tensor c = cube(DType::f32);
  CHECK(argmax(c, 1).to_vector<int64_t>() == std::vector<int64_t>(8, 2));
  CHECK_ERROR_CONTAINS(argmax(zeros({2, 0}), 1), "argmax: dimension 1 of shape [2, 0] is empty");
  CHECK_ERROR_CONTAINS(argmax(zeros({2, 3}), 2), "argmax: dimension 2 out of range for a 2-d tensor");
}

TEST_CASE("topk_mask: the k largest of scores + bias per row; ties to the lower index; NaN last") {
  auto mask = [](const Tensor& m) {
    std::vector<int> v;
    for (bool b : m.to_vector<bool>()) v.push_back(b ? 1 : 0);
    return v;
  };
  Tensor s = from_vector<float>({0.1f, 0.9f, 0.5f, 0.9f, 0.3f, 0.2f, 0.8f, 0.7f}, {2, 4});
  CHECK(topk_mask(s, 2).dtype() == DType::boolean);
  CHECK(topk_mask(s, 2).shape() == Shape{2, 4});
  CHECK(mask(topk_mask(s, 2)) == std::vector<int>{0, 1, 0, 1, 0, 0, 1, 1});
  CHECK(mask(topk_mask(s, 1)) == std::vector<int>{0, 1, 0, 0, 0, 0, 1, 0});  // tie 0.9: index 1
  CHECK(mask(topk_mask(s, 0)) == std::vector<int>(8, 0));
  CHECK(mask(topk_mask(s, 4)) == std::vector<int>(8, 1));
  // The bias changes the selection (the SMoRA load-balancing bias).
  Tensor bias = from_vector<float>({1.0f, 0.0f, 0.0f, -1.0f}, {4});
  CHECK(mask(topk_mask(s, 2, bias)) == std::vector<int>{1, 1, 0, 0, 1, 0, 1, 0});
  // NaN ranks below every number, -inf included; a row of equal keys takes the first k.
  Tensor n = from_vector<float>({kNaN, -kInf, 2.0f, kNaN, 1.0f, 1.0f, 1.0f, 1.0f}, {2, 4});
  CHECK(mask(topk_mask(n, 2)) == std::vector<int>{0, 1, 1, 0, 1, 1, 0, 0});
  // Leading dimensions and bf16 scores.
  Tensor b = from_vector<float>({3, 1, 2, 0, 0, 5}, {1, 2, 3}, DType::bf16);
  CHECK(topk_mask(b, 1).shape() == Shape{1, 2, 3});
  CHECK(mask(topk_mask(b, 1)) == std::vector<int>{1, 0, 0, 0, 0, 1});
  CHECK_ERROR_CONTAINS(topk_mask(s, 5), "topk_mask: k = 5 is outside [0, 4]");
  CHECK_ERROR_CONTAINS(topk_mask(s, 1, zeros({3})), "topk_mask: bias must be a floating 1-D tensor of size 4");
  CHECK_ERROR_CONTAINS(topk_mask(zeros({2}, {DType::i64}), 1), "topk_mask: scores must be floating");
}

TEST_CASE("logsumexp: values, stability, infinities") {
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(dt);
    Tensor x = from_vector<double>({1, 2, 3, 0, 0, 0}, {2, 3}, dt);
    const double l123 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
    check_values(logsumexp(x, 1), {l123, std::log(3.0)});
    check_values(logsumexp(x, 0), {std::log(std::exp(1.0) + 1), std::log(std::exp(2.0) + 1),
                                   std::log(std::exp(3.0) + 1)});
    CHECK(logsumexp(x, -1, true).shape() == Shape{2, 1});
    // no overflow for large values, no underflow for very negative ones
    check_values(logsumexp(from_vector<double>({1e4, 1e4}, {2}, dt), 0), {1e4 + std::log(2.0)});
    check_values(logsumexp(from_vector<double>({-1e4, -1e4 + 1}, {2}, dt), 0),
                 {-1e4 + 1 + std::log(1 + std::exp(-1.0))});
    check_values(logsumexp(from_vector<double>({-kInf, -kInf, 0, -kInf}, {2, 2}, dt), 1), {-kInf, 0});
    check_values(logsumexp(from_vector<double>({kInf, 1, kNaN, 1}, {2, 2}, dt), 1), {kInf, kNaN});
  }
  CHECK(logsumexp(from_vector<int64_t>({0, 0}, {2}), 0).dtype() == DType::f32);
  check_values(logsumexp(from_vector<int64_t>({0, 0}, {2}), 0), {std::log(2.0)});
  check_values(logsumexp(from_vector<float>({1, 2}, {2}, DType::bf16), 0),
               {static_cast<float>(bf16(static_cast<float>(2 + std::log1p(std::exp(-1.0)))))}, 0);
  check_values(logsumexp(zeros({2, 0}), 1), {-kInf, -kInf});
}

TEST_CASE("sum_to undoes broadcasting") {
  Tensor g = cube(DType::f64);  // [2, 3, 4]
  Tensor r = sum_to(g, {3, 1});
  CHECK(r.shape() == Shape{3, 1});
  check_values(r, {412, 492, 572});
  Tensor last = sum_to(g, {4});
  CHECK(last.shape() == Shape{4});
  check_values(last, {360, 366, 372, 378});
  Tensor mid = sum_to(g, {2, 1, 4});
  CHECK(mid.shape() == Shape{2, 1, 4});
  check_values(mid, {30, 33, 36, 39, 330, 333, 336, 339});
  Tensor scalar = sum_to(g, {});
  CHECK(scalar.dim() == 0);
  CHECK(scalar.item<double>() == 1476);
  CHECK(sum_to(g, {1, 1, 1}).shape() == Shape{1, 1, 1});
  // nothing broadcast: the input itself
  CHECK(sum_to(g, {2, 3, 4}).shares_storage(g));
  // round trip with broadcasting: sum_to(expand(b)) = b * (number of copies)
  Tensor b = from_vector<float>({1, 2, 3}, {3, 1});
  check_values(sum_to(b.expand({5, 3, 2}), {3, 1}), {10, 20, 30});
  CHECK_ERROR_CONTAINS(sum_to(g, {3}), "sum_to: shape [3] does not broadcast to [2, 3, 4]");
  CHECK_ERROR_CONTAINS(sum_to(g, {1, 2, 3, 4}), "sum_to: shape [1, 2, 3, 4] does not broadcast to [2, 3, 4]");
}

TEST_CASE("allclose and max_abs_diff") {
  Tensor a = from_vector<double>({1, 2, 3}, {3});
  Tensor b = from_vector<double>({1, 2 + 1e-7, 3}, {3});
  CHECK(allclose(a, b, 1e-5, 0));
  CHECK_FALSE(allclose(a, b, 1e-9, 1e-9));
  CHECK(max_abs_diff(a, b) == doctest::Approx(1e-7).epsilon(1e-6));
  CHECK(max_abs_diff(a, a) == 0);
  // broadcasting, dtypes may differ
  CHECK(allclose(from_vector<float>({2, 2}, {2}), scalar_tensor(2.0, DType::f64)));
  CHECK(max_abs_diff(from_vector<float>({1, 5}, {2}), from_vector<int64_t>({1}, {1})) == 4);
  // infinities equal to themselves are close; NaN is close to nothing
  CHECK(allclose(from_vector<float>({kInf, -kInf}, {2}), from_vector<float>({kInf, -kInf}, {2})));
  CHECK_FALSE(allclose(from_vector<float>({kInf}, {1}), from_vector<float>({-kInf}, {1})));
  CHECK_FALSE(allclose(from_vector<float>({kNaN}, {1}), from_vector<float>({kNaN}, {1})));
  CHECK(std::isnan(max_abs_diff(from_vector<float>({kNaN, 1}, {2}), from_vector<float>({0, 1}, {2}))));
  CHECK_ERROR_CONTAINS(allclose(zeros({2}), zeros({3})), "allclose: shapes [2] and [3] cannot be broadcast");
}

TEST_CASE("reduction error messages") {
  CHECK_ERROR_CONTAINS(mean(from_vector<int64_t>({1, 2}, {2})), "mean: dtype i64 is not supported");
  CHECK_ERROR_CONTAINS(mean(ones({2}, DType::boolean)), "mean: dtype bool is not supported");
  CHECK_ERROR_CONTAINS(sum(zeros({2, 3}), {2}), "sum: dimension 2 out of range for a 2-d tensor");
  CHECK_ERROR_CONTAINS(sum(zeros({2, 3}), {1, -1}), "sum: dimension 1 repeated in dims [1, -1]");
  CHECK_ERROR_CONTAINS(amax(Tensor()), "amax: input is an undefined tensor");
  CHECK_ERROR_CONTAINS(logsumexp(zeros({2}), 1), "logsumexp: dimension 1 out of range for a 1-d tensor");
}

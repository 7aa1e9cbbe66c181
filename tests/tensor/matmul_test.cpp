// matmul and linear against a naive triple loop in f64: odd sizes, transposed and strided views,
// broadcast batch dims, 1-D operands, every floating dtype at its tolerance; transposed operands
// reach BLAS without a copy (checked through the allocator's peak); error messages.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <cmath>
#include <string>

#include "tensor/ops.h"

using namespace mlr;

namespace {


Tensor random(const Shape& shape, uint64_t seed, DType dtype = DType::f32) {
  Generator gen(seed);
  return randn(shape, gen, dtype);
}

struct Reference {
  Shape shape;
  std::vector<double> values;
};

// numpy matmul, written out: 1-D operands promoted and the added dimension dropped, batch dims
// broadcast, then out[batch, i, j] = sum_p a[batch, i, p] b[batch, p, j] in f64.
Reference naive_matmul(const Tensor& a, const Tensor& b) {
  Shape sa = a.shape(), sb = b.shape();
  const bool a_vec = sa.size() == 1, b_vec = sb.size() == 1;
  if (a_vec) sa.insert(sa.begin(), 1);
  if (b_vec) sb.push_back(1);
  const std::vector<double> va = a.to_vector<double>(), vb = b.to_vector<double>();
  const int64_t m = sa[sa.size() - 2], k = sa.back(), n = sb.back();
  const size_t nb = std::max(sa.size(), sb.size()) - 2;
  Shape batch(nb);
  auto dim_of = [&](const Shape& s, size_t i) {  // batch dim i of s, right-aligned; 1 if absent
    size_t own = s.size() - 2;
    return i + own < nb ? int64_t(1) : s[i + own - nb];
  };
  for (size_t i = 0; i < nb; ++i) batch[i] = std::max(dim_of(sa, i), dim_of(sb, i));
  const int64_t nbatch = shape_numel(batch);
  Reference r;
  r.values.assign(static_cast<size_t>(nbatch * m * n), 0.0);
  for (int64_t flat = 0; flat < nbatch; ++flat) {
    // batch index -> flat matrix index inside a and inside b (size-1 dims broadcast)
    int64_t rest = flat, ia = 0, ib = 0, stride_a = 1, stride_b = 1;
    for (int64_t i = static_cast<int64_t>(nb) - 1; i >= 0; --i) {
      int64_t idx = rest % batch[i];
      rest /= batch[i];
      int64_t da = dim_of(sa, i), db = dim_of(sb, i);
      ia += (da == 1 ? 0 : idx) * stride_a;
      ib += (db == 1 ? 0 : idx) * stride_b;
      stride_a *= da;
      stride_b *= db;
    }
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (int64_t p = 0; p < k; ++p) s += va[(ia * m + i) * k + p] * vb[(ib * k + p) * n + j];
        r.values[(flat * m + i) * n + j] = s;
      }
  }
  r.shape = batch;
  if (!a_vec) r.shape.push_back(m);
  if (!b_vec) r.shape.push_back(n);
  return r;
}

// Tolerances: f32/f64 for the summation order; 16-bit: the product rounded once to the storage type.
struct Tol {
  double rtol, atol;
};
Tol tolerance(DType t, int64_t k) {
  switch (t) {
    case DType::f64: return {1e-12, 1e-12};
    case DType::f32: return {1e-5, 1e-5 * std::sqrt(double(k + 1))};
    case DType::bf16: return {std::ldexp(1.0, -8), 1e-5 * std::sqrt(double(k + 1))};
    default: return {std::ldexp(1.0, -11), 1e-5 * std::sqrt(double(k + 1))};
  }
}

void check_matches(const Tensor& out, const Reference& ref, Tol tol, const std::string& label) {
  INFO(label);
  REQUIRE(out.shape() == ref.shape);
  const std::vector<double> got = out.to_vector<double>();
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::fabs(got[i] - ref.values[i]) > tol.atol + tol.rtol * std::fabs(ref.values[i])) {
      if (++failures <= 3) FAIL_CHECK("element ", i, ": got ", got[i], " expected ", ref.values[i]);
    }
  }
  CHECK(failures == 0);
}

void check_matmul(const Tensor& a, const Tensor& b, const std::string& label) {
  Tensor out = matmul(a, b);
  CHECK(out.dtype() == promote_types(a.dtype(), b.dtype()));
  const int64_t k = a.shape().back();
  check_matches(out, naive_matmul(a, b), tolerance(out.dtype(), k), label + " a " + shape_str(a.shape()) + " b " +
                                                                         shape_str(b.shape()) + " " +
                                                                         dtype_name(a.dtype()));
}

// Bytes allocated while f runs beyond those already held, at the peak.
template <typename F>
size_t extra_peak_bytes(F&& f) {
  reset_peak_memory(Device::cpu());
  const size_t before = memory_stats(Device::cpu()).current_bytes;
  f();
  return memory_stats(Device::cpu()).peak_bytes - before;
}

}  // namespace

TEST_CASE("matmul: 2-D odd sizes in every floating dtype") {
  const std::vector<std::array<int64_t, 3>> sizes = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 1, 65}, {1, 31, 2},
                                                     {2, 3, 1}, {70, 129, 33}};
  uint64_t seed = 1;
  for (DType t : {DType::f32, DType::f64, DType::bf16, DType::f16})
    for (auto [m, k, n] : sizes) check_matmul(random({m, k}, seed++, t), random({k, n}, seed++, t), "2-d");
}

TEST_CASE("matmul: transposed, padded and strided views") {
  for (DType t : {DType::f32, DType::f64, DType::bf16}) {
    // column-major a and b (transposes), row-major with padded leading dimensions, a column
    // stride of 2 (copied), and a broadcast (stride 0) row
    Tensor at = random({9, 6}, 10, t).t();             // [6, 9] column-major
    Tensor bt = random({5, 9}, 11, t).t();             // [9, 5] column-major
    Tensor ap = random({6, 14}, 12, t).narrow(1, 2, 9);  // [6, 9], ld 14
    Tensor bs = random({9, 10}, 13, t).slice(1, 0, 10, 2);  // [9, 5], column stride 2
    Tensor be = random({1, 5}, 14, t).expand({9, 5});   // row stride 0
    check_matmul(at, bt, "a^T b^T");
    check_matmul(ap, bt, "padded a, b^T");
    check_matmul(at, bs, "a^T, strided b");
    check_matmul(ap, be, "padded a, expanded b");
    check_matmul(random({3, 9, 6}, 15, t).transpose(1, 2), random({3, 9, 5}, 16, t), "batched a^T");
    check_matmul(random({4, 3, 6, 9}, 17, t).select(1, 1), random({4, 5, 9}, 18, t).transpose(-1, -2),
                 "batch-strided a, batched b^T");
  }
}

TEST_CASE("matmul: broadcast batch dimensions and 1-D operands") {
  uint64_t seed = 100;
  for (DType t : {DType::f32, DType::f64, DType::f16}) {
    check_matmul(random({4, 3, 5}, seed++, t), random({4, 5, 2}, seed++, t), "batched");
    check_matmul(random({4, 3, 5}, seed++, t), random({5, 2}, seed++, t), "batch @ shared matrix");
    check_matmul(random({2, 1, 3, 5}, seed++, t), random({3, 5, 4}, seed++, t), "[2,1] x [3] batches");
    check_matmul(random({2, 1, 3, 5}, seed++, t), random({1, 3, 5, 4}, seed++, t), "[2,1] x [1,3] batches");
    check_matmul(random({3, 5}, seed++, t), random({2, 2, 5, 4}, seed++, t), "shared matrix @ batch");
    check_matmul(random({5}, seed++, t), random({5}, seed++, t), "vector . vector");
    check_matmul(random({5}, seed++, t), random({5, 3}, seed++, t), "vector @ matrix");
    check_matmul(random({4, 5}, seed++, t), random({5}, seed++, t), "matrix @ vector");
    check_matmul(random({5}, seed++, t), random({2, 5, 3}, seed++, t), "vector @ batch");
    check_matmul(random({2, 3, 4, 5}, seed++, t), random({5}, seed++, t), "batch @ vector");
    check_matmul(random({2, 3, 4, 5}, seed++, t).permute({1, 0, 2, 3}), random({3, 1, 5, 2}, seed++, t),
                 "permuted batch dims");
  }
  CHECK(matmul(random({5}, 1), random({5}, 2)).dim() == 0);
  CHECK(matmul(random({2, 3, 4, 5}, 1), random({5}, 2)).shape() == Shape({2, 3, 4}));
  CHECK(matmul(random({5}, 1), random({2, 5, 3}, 2)).shape() == Shape({2, 3}));
}

TEST_CASE("matmul: empty dimensions and mixed dtypes") {
  Tensor z = matmul(random({3, 0}, 1), random({0, 4}, 2));
  CHECK(z.shape() == Shape({3, 4}));
  for (double v : z.to_vector<double>()) CHECK(v == 0.0);
  CHECK(matmul(random({0, 3}, 1), random({3, 4}, 2)).shape() == Shape({0, 4}));
  CHECK(matmul(random({2, 0, 3}, 1), random({3, 4}, 2)).shape() == Shape({2, 0, 4}));
  // f32 @ f64 promotes to f64; bf16 @ f16 to f32
  check_matmul(random({3, 4}, 3), random({4, 2}, 4, DType::f64), "f32 @ f64");
  check_matmul(random({3, 4}, 3, DType::bf16), random({4, 2}, 4, DType::f16), "bf16 @ f16");
  check_matmul(arange(12, DType::i64).view({3, 4}), random({4, 2}, 5, DType::f64), "i64 @ f64");
}

TEST_CASE("matmul: 16-bit products are rounded once from f32 accumulation") {
  // Sums whose running total in the 16-bit type would stall (the spacing passes the addend) but
  // which f32 accumulation gets exactly, then rounds once.
  Tensor a = ones({1, 512}, DType::bf16);
  Tensor b = full({512, 1}, 1.0 + std::ldexp(1.0, -7), DType::bf16);
  CHECK(matmul(a, b).item<double>() == 512.0 * (1.0 + std::ldexp(1.0, -7)));
  Tensor c = ones({1, 4096}, DType::f16);
  CHECK(matmul(c, c.t()).item<double>() == 4096.0);  // an f16 running sum stops at 2048
  Tensor d = ones({1, 3000}, DType::bf16);
  CHECK(matmul(d, d.t()).item<double>() == 3008.0);  // 3000 rounded once to bf16 (spacing 16 in [2048, 4096))
}

TEST_CASE("matmul: transposed operands and a shared weight reach BLAS without copies") {
  Tensor a = random({256, 128}, 1);
  Tensor b = random({64, 128}, 2);
  const size_t out_bytes = 256 * 64 * sizeof(float);
  CHECK(extra_peak_bytes([&] { (void)matmul(a, b.t()); }) == out_bytes);
  CHECK(extra_peak_bytes([&] { (void)matmul(b, a.t()); }) == out_bytes);
  Tensor x = random({4, 64, 128}, 3);
  CHECK(extra_peak_bytes([&] { (void)matmul(x, b.t()); }) == 4 * 64 * 64 * sizeof(float));
  CHECK(extra_peak_bytes([&] { (void)matmul(x.transpose(1, 2).transpose(1, 2), a.t()); }) ==
        4 * 64 * 256 * sizeof(float));
  CHECK(extra_peak_bytes([&] { (void)linear(x, b); }) == 4 * 64 * 64 * sizeof(float));
  // a column stride of 2 cannot be given to BLAS: that operand (only) is copied
  Tensor strided = random({256, 256}, 4).slice(1, 0, 256, 2);
  const size_t bytes_128 = 256 * 128 * sizeof(float);
  CHECK(extra_peak_bytes([&] { (void)matmul(a.t(), strided); }) == bytes_128 + 128 * 128 * sizeof(float));
}

TEST_CASE("linear: x @ w^T + bias against the naive loop") {
  for (DType t : {DType::f32, DType::f64, DType::bf16}) {
    Tensor x = random({2, 3, 5}, 1, t), w = random({4, 5}, 2, t), bias = random({4}, 3, t);
    Reference ref = naive_matmul(x, w.t());
    check_matches(linear(x, w), ref, tolerance(t, 5), "linear without bias");
    // with bias: the product (checked above) plus the bias, summed in f32 and rounded to the dtype
    auto with_bias = [&](const Tensor& product) {
      Reference r{product.shape(), product.to_vector<double>()};
      const std::vector<double> bv = bias.to_vector<double>();
      for (size_t i = 0; i < r.values.size(); ++i) {
        const double sum = t == DType::f64 ? r.values[i] + bv[i % 4] : float(r.values[i]) + float(bv[i % 4]);
        r.values[i] = t == DType::bf16 ? double(float(bf16(float(sum)))) : sum;
      }
      return r;
    };
    check_matches(linear(x, w, bias), with_bias(linear(x, w)), {1e-15, 1e-15}, "linear with bias");
    Tensor x1 = random({5}, 4, t);
    check_matches(linear(x1, w), naive_matmul(x1, w.t()), tolerance(t, 5), "linear 1-d");
    check_matches(linear(x1, w, bias), with_bias(linear(x1, w)), {1e-15, 1e-15}, "linear 1-d with bias");
  }
  // a non-contiguous input
  Tensor xt = random({5, 6}, 5).t();
  Tensor w = random({3, 5}, 6);
  check_matches(linear(xt, w), naive_matmul(xt, w.t()), tolerance(DType::f32, 5), "linear transposed input");
}

TEST_CASE("matmul and linear: errors name the op and the shapes") {
  CHECK_ERROR_CONTAINS(matmul(random({2, 3}, 1), random({4, 5}, 2)),
                       "matmul: shapes [2, 3] and [4, 5] do not match (inner dimensions 3 and 4)");
  CHECK_ERROR_CONTAINS(matmul(random({2, 2, 3}, 1), random({3, 3, 4}, 2)), "cannot be broadcast");
  CHECK_ERROR_CONTAINS(matmul(ones({2, 3}, DType::i32), ones({3, 2}, DType::i32)), "matmul: dtype i32 is not supported");
  CHECK_ERROR_CONTAINS(matmul(scalar_tensor(2.0), random({3}, 1)), "matmul: 0-d operand");
  CHECK_ERROR_CONTAINS(linear(random({2, 5}, 1), random({4, 6}, 2)), "linear: input [2, 5] does not match weight [4, 6]");
  CHECK_ERROR_CONTAINS(linear(random({2, 5}, 1), random({4, 5}, 2), random({3}, 3)),
                       "linear: bias [3] does not match weight [4, 5]");
  CHECK_ERROR_CONTAINS(linear(random({2, 5}, 1), random({5}, 2)), "linear: weight must be 2-d");
}

// The LLaMA reference ops (tensor/nn_ops.h) on the CPU: each forward against a naive reference
// written independently of the kernel (explicit masks, Hugging Face's rotate_half, log-softmax by
// hand), each backward against central finite differences in f64 (fd_check.h), and the
// validation errors.
#include <doctest/doctest.h>

#include "tests/test_support.h"

#include <omp.h>

#include <cmath>
#include <limits>
#include <string>

#include "tensor/nn_ops.h"
#include "tensor/ops.h"
#include "tests/tensor/fd_check.h"

using namespace mlr;
using mlr::test::fd_check;
using mlr::test::random_f64;

namespace {


std::vector<double> vals(const Tensor& t) { return t.to_vector<double>(); }

// |got - expected| <= atol + rtol |expected| elementwise (reports the first few failures)
void check_close(const std::vector<double>& got, const std::vector<double>& expected, double rtol, double atol,
                 const std::string& label) {
  INFO(label);
  REQUIRE(got.size() == expected.size());
  int failures = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - expected[i]) <= atol + rtol * std::fabs(expected[i])) && ++failures <= 3)
      FAIL_CHECK("element ", i, ": got ", got[i], " expected ", expected[i]);
  CHECK(failures == 0);
}
void check_close(const Tensor& got, const std::vector<double>& expected, double rtol, double atol,
                 const std::string& label) {
  check_close(vals(got), expected, rtol, atol, label);
}

struct Tol {
  double rtol, atol;
};
// Forward tolerances against an f64 reference computed from the same (rounded) inputs.
Tol forward_tol(DType t) {
  switch (t) {
    case DType::f64: return {1e-12, 1e-12};
    case DType::f32: return {1e-5, 1e-6};
    case DType::bf16: return {1.6e-2, 1e-3};
    default: return {2e-3, 1e-4};
  }
}

Tensor rnd(const Shape& shape, uint64_t seed, DType dtype = DType::f64, double scale = 1.0) {
  return random_f64(shape, seed, scale).to(dtype);
}

// ---- references ----

std::vector<double> rmsnorm_ref(const Tensor& x, const Tensor& w, double eps, std::vector<double>* rstd) {
  const std::vector<double> xv = vals(x), wv = vals(w);
  const int64_t d = x.size(-1), rows = x.numel() / d;
  std::vector<double> y(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ms = 0;
    for (int64_t j = 0; j < d; ++j) ms += xv[r * d + j] * xv[r * d + j] / double(d);
    const double rs = 1.0 / std::sqrt(ms + eps);
    if (rstd) rstd->push_back(rs);
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = xv[r * d + j] * rs * wv[j];
  }
  return y;
}

// Hugging Face: y = x * cat(cos, cos) + rotate_half(x) * cat(sin, sin), rotate_half(x) = cat(-x2, x1).
// Interleaved: each pair (x[2i], x[2i+1]) is the complex number x[2i] + i x[2i+1], multiplied by e^{i theta}.
// cos_at(b, s, i) and sin_at(b, s, i) give the table entries.
template <typename Table>
std::vector<double> rope_ref(const Tensor& x, RopeLayout layout, Table&& table) {
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const std::vector<double> xv = vals(x);
  std::vector<double> y(xv.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < H; ++h) {
        const double* xr = &xv[((b * S + s) * H + h) * D];
        double* yr = &y[((b * S + s) * H + h) * D];
        for (int64_t j = 0; j < D; ++j) {
          if (layout == RopeLayout::half) {
            const auto [c, sn] = table(b, s, j % half);
            const double rotated = j < half ? -xr[j + half] : xr[j - half];
            yr[j] = xr[j] * c + rotated * sn;
          } else {
            const auto [c, sn] = table(b, s, j / 2);
            const double re = xr[j - j % 2], im = xr[j - j % 2 + 1];
            yr[j] = j % 2 == 0 ? re * c - im * sn : re * sn + im * c;
          }
        }
      }
  return y;
}

struct AttentionRef {
  std::vector<double> out, lse;
};
// Explicit S = scale q k^T with a mask built by loops, softmax over allowed keys, O = P v.
// doc[i] is the document of position i (all zeros without cu_seqlens).
AttentionRef attention_ref(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                           const std::vector<int64_t>& doc) {
  const int64_t B = q.size(0), S = q.size(1), H = q.size(2), D = q.size(3), HK = k.size(2);
  const std::vector<double> qv = vals(q), kv = vals(k), vv = vals(v);
  std::vector<std::vector<bool>> allowed(S, std::vector<bool>(S));
  for (int64_t i = 0; i < S; ++i)
    for (int64_t j = 0; j < S; ++j) allowed[i][j] = j <= i && doc[i] == doc[j];
  AttentionRef r{std::vector<double>(qv.size()), std::vector<double>(B * H * S)};
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kh = h / (H / HK);  // grouped-query mapping
      for (int64_t i = 0; i < S; ++i) {
        std::vector<double> s(S, -std::numeric_limits<double>::infinity());
        double m = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < S; ++j) {
          if (!allowed[i][j]) continue;
          double dot = 0;
          for (int64_t c = 0; c < D; ++c) dot += qv[((b * S + i) * H + h) * D + c] * kv[((b * S + j) * HK + kh) * D + c];
          s[j] = scale * dot;
          m = std::max(m, s[j]);
        }
        double z = 0;
        for (int64_t j = 0; j < S; ++j) z += allowed[i][j] ? std::exp(s[j] - m) : 0.0;
        r.lse[(b * H + h) * S + i] = m + std::log(z);
        for (int64_t c = 0; c < D; ++c) {
          double o = 0;
          for (int64_t j = 0; j < S; ++j)
            if (allowed[i][j]) o += std::exp(s[j] - m) / z * vv[((b * S + j) * HK + kh) * D + c];
          r.out[((b * S + i) * H + h) * D + c] = o;
        }
      }
    }
  return r;
}

std::vector<int64_t> docs_of(const std::vector<int32_t>& cu) {
  std::vector<int64_t> doc;
  for (size_t d = 0; d + 1 < cu.size(); ++d)
    for (int32_t i = cu[d]; i < cu[d + 1]; ++i) doc.push_back(static_cast<int64_t>(d));
  return doc;
}

}  // namespace

// ================================================================== rmsnorm

TEST_CASE("rmsnorm forward matches the formula in every dtype") {
  const double eps = 1e-5;
  for (DType t : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    Tensor x = rnd({3, 4, 33}, 1, t), w = rnd({33}, 2, t);
    std::vector<double> rstd;
    const std::vector<double> y = rmsnorm_ref(x, w, eps, &rstd);
    RmsNormOutput r = rmsnorm_forward(x, w, eps);
    CHECK(r.y.dtype() == t);
    CHECK(r.rstd.shape() == Shape({3, 4}));
    CHECK(r.rstd.dtype() == (t == DType::f64 ? DType::f64 : DType::f32));
    check_close(r.y, y, forward_tol(t).rtol, forward_tol(t).atol, std::string("rmsnorm y ") + dtype_name(t));
    check_close(r.rstd, rstd, t == DType::f64 ? 1e-12 : 1e-5, 0, "rmsnorm rstd");
  }
  // a strided input
  Tensor xt = rnd({8, 5}, 3).t();
  Tensor w = rnd({8}, 4);
  check_close(rmsnorm_forward(xt, w, 1e-6).y, rmsnorm_ref(xt, w, 1e-6, nullptr), 1e-12, 1e-12, "strided x");
}

TEST_CASE("rmsnorm backward matches finite differences (dx and dweight)") {
  const double eps = 1e-3;
  Tensor x = rnd({2, 3, 7}, 5), w = rnd({7}, 6), up = rnd({2, 3, 7}, 7);
  RmsNormOutput r = rmsnorm_forward(x, w, eps);
  Tensor dw;
  Tensor dx = rmsnorm_backward(up, x, w, r.rstd, &dw);
  fd_check("rmsnorm", {x, w}, [&](const std::vector<Tensor>& in) { return rmsnorm_forward(in[0], in[1], eps).y; },
           up, {{0, dx}, {1, dw}});
  // frozen weight: the same dx, no dweight
  check_close(rmsnorm_backward(up, x, w, r.rstd, nullptr), vals(dx), 0, 0, "dx without dweight");
  // many rows (the parallel column split of dweight) against a serial f64 sum
  Tensor xb = rnd({300, 70}, 8), wb = rnd({70}, 9), ub = rnd({300, 70}, 10);
  RmsNormOutput rb = rmsnorm_forward(xb, wb, eps);
  Tensor dwb;
  (void)rmsnorm_backward(ub, xb, wb, rb.rstd, &dwb);
  const std::vector<double> xv = vals(xb), uv = vals(ub), rv = vals(rb.rstd);
  std::vector<double> expect(70, 0.0);
  for (int64_t i = 0; i < 300; ++i)
    for (int64_t j = 0; j < 70; ++j) expect[j] += uv[i * 70 + j] * xv[i * 70 + j] * rv[i];
  check_close(dwb, expect, 1e-12, 1e-12, "dweight over many rows");
}

TEST_CASE("rmsnorm validates shapes and dtypes") {
  Tensor x = rnd({2, 4}, 1, DType::f32);
  CHECK_ERROR_CONTAINS(rmsnorm_forward(x, rnd({3}, 2, DType::f32), 1e-5),
                       "rmsnorm_forward: weight has shape [3], expected [4]");
  CHECK_ERROR_CONTAINS(rmsnorm_forward(x, rnd({4}, 2, DType::bf16), 1e-5),
                       "rmsnorm_forward: weight has dtype bf16 but x has dtype f32");
  CHECK_ERROR_CONTAINS(rmsnorm_forward(ones({2, 4}, DType::i32), ones({4}, DType::i32), 1e-5), "x has dtype i32");
  RmsNormOutput r = rmsnorm_forward(x, ones({4}), 1e-5);
  CHECK_ERROR_CONTAINS(rmsnorm_backward(x, x, ones({4}), r.rstd.to(DType::f64), nullptr),
                       "rmsnorm_backward: rstd has dtype f64, expected f32");
  CHECK_ERROR_CONTAINS(rmsnorm_backward(rnd({2, 3}, 3, DType::f32), x, ones({4}), r.rstd, nullptr),
                       "rmsnorm_backward: dy has shape [2, 3], expected [2, 4]");
}

// ================================================================== rope

TEST_CASE("rope tables: angle = position * inv_freq in f32") {
  Tensor pos = tensor<int64_t>({0, 1, 5, 4095});
  Tensor inv = tensor<float>({1.0f, 0.1f, 1e-4f});
  Tensor c, s;
  rope_tables(pos, inv, c, s);
  CHECK(c.shape() == Shape({4, 3}));
  CHECK(c.dtype() == DType::f32);
  const std::vector<float> cv = c.to_vector<float>(), sv = s.to_vector<float>();
  const int64_t p[] = {0, 1, 5, 4095};
  const float f[] = {1.0f, 0.1f, 1e-4f};
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 3; ++j) {
      CHECK(cv[i * 3 + j] == std::cos(static_cast<float>(p[i]) * f[j]));
      CHECK(sv[i * 3 + j] == std::sin(static_cast<float>(p[i]) * f[j]));
    }
  Tensor c2, s2;
  rope_tables(from_vector<int32_t>({0, 1, 2, 3, 4, 5}, {2, 3}), inv, c2, s2);
  CHECK(c2.shape() == Shape({2, 3, 3}));
  CHECK_ERROR_CONTAINS(rope_tables(pos, inv.to(DType::f64), c, s), "rope_tables: inv_freq must be 1-d f32");
}

TEST_CASE("rope forward: half (rotate_half) and interleaved layouts against the direct formulas") {
  const int64_t B = 2, S = 5, H = 3, D = 8;
  std::vector<float> inv;
  for (int64_t i = 0; i < D / 2; ++i) inv.push_back(std::pow(10000.0f, -2.0f * i / D));
  Tensor c, s;
  rope_tables(arange(S, DType::i64), tensor<float>({inv[0], inv[1], inv[2], inv[3]}), c, s);
  const std::vector<double> cv = vals(c), sv = vals(s);
  auto shared = [&](int64_t, int64_t pos, int64_t i) { return std::pair{cv[pos * 4 + i], sv[pos * 4 + i]}; };
  for (DType t : {DType::f64, DType::f32, DType::bf16}) {
    Tensor x = rnd({B, S, H, D}, 11, t);
    for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
      Tensor y = rope_forward(x, c, s, layout);
      CHECK(y.dtype() == t);
      check_close(y, rope_ref(x, layout, shared), forward_tol(t).rtol, forward_tol(t).atol,
                  std::string("rope ") + (layout == RopeLayout::half ? "half " : "interleaved ") + dtype_name(t));
    }
  }
  // the two layouts differ (the pairs are different elements)
  Tensor x = rnd({B, S, H, D}, 12);
  CHECK(vals(rope_forward(x, c, s, RopeLayout::half)) != vals(rope_forward(x, c, s, RopeLayout::interleaved)));

  // per-batch positions: batch 0 at positions 0..4, batch 1 at 7..11
  Tensor pos = from_vector<int64_t>({0, 1, 2, 3, 4, 7, 8, 9, 10, 11}, {2, 5});
  Tensor cb, sb;
  rope_tables(pos, tensor<float>({inv[0], inv[1], inv[2], inv[3]}), cb, sb);
  const std::vector<double> cbv = vals(cb), sbv = vals(sb);
  auto per_batch = [&](int64_t b, int64_t p, int64_t i) {
    return std::pair{cbv[(b * S + p) * 4 + i], sbv[(b * S + p) * 4 + i]};
  };
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved})
    check_close(rope_forward(x, cb, sb, layout), rope_ref(x, layout, per_batch), 1e-12, 1e-12, "per-batch tables");
  // a non-contiguous x (heads and seq swapped in memory)
  Tensor xt = rnd({B, H, S, D}, 13).transpose(1, 2);
  check_close(rope_forward(xt, c, s, RopeLayout::half), rope_ref(xt, RopeLayout::half, shared), 1e-12, 1e-12,
              "strided x");
}

TEST_CASE("rope backward: finite differences, and it inverts the forward") {
  const int64_t B = 2, S = 4, H = 2, D = 6;
  Tensor c = rnd({B, S, D / 2}, 20, DType::f32), s = rnd({B, S, D / 2}, 21, DType::f32);
  Tensor c1, s1;
  rope_tables(arange(S, DType::i64), tensor<float>({1.0f, 0.3f, 0.01f}), c1, s1);
  for (RopeLayout layout : {RopeLayout::half, RopeLayout::interleaved}) {
    Tensor x = rnd({B, S, H, D}, 22), up = rnd({B, S, H, D}, 23);
    // arbitrary (non-rotation) tables make the adjoint check strict
    fd_check("rope", {x}, [&](const std::vector<Tensor>& in) { return rope_forward(in[0], c, s, layout); }, up,
             {{0, rope_backward(up, c, s, layout)}});
    // with true cos/sin tables the backward is the inverse rotation
    check_close(rope_backward(rope_forward(x, c1, s1, layout), c1, s1, layout), vals(x), 1e-6, 1e-6, "inverse");
  }
}

TEST_CASE("rope validates shapes") {
  Tensor c = ones({4, 3}), s = ones({4, 3});
  CHECK_ERROR_CONTAINS(rope_forward(rnd({1, 4, 2, 5}, 1, DType::f32), c, s, RopeLayout::half), "head_dim 5 is odd");
  CHECK_ERROR_CONTAINS(rope_forward(rnd({1, 4, 2, 6}, 1, DType::f32), ones({5, 3}), ones({5, 3}), RopeLayout::half),
                       "rope_forward: cos/sin have shape [5, 3], expected [4, 3] or [1, 4, 3]");
  CHECK_ERROR_CONTAINS(rope_forward(rnd({4, 2, 6}, 1, DType::f32), c, s, RopeLayout::half),
                       "x must be [batch, seq, heads, head_dim]");
  CHECK_ERROR_CONTAINS(rope_backward(rnd({1, 4, 2, 6}, 1, DType::f32), c, ones({4, 3}, DType::bf16),
                                     RopeLayout::interleaved),
                       "rope_backward: cos/sin have dtypes f32/bf16");
}

// ================================================================== swiglu

TEST_CASE("swiglu forward and backward") {
  for (DType t : {DType::f64, DType::f32, DType::bf16}) {
    Tensor g = rnd({3, 17}, 30, t, 2.0), u = rnd({3, 17}, 31, t);
    const std::vector<double> gv = vals(g), uv = vals(u);
    std::vector<double> h;
    for (size_t i = 0; i < gv.size(); ++i) h.push_back(gv[i] / (1 + std::exp(-gv[i])) * uv[i]);
    check_close(swiglu_forward(g, u), h, forward_tol(t).rtol, forward_tol(t).atol, "swiglu");
  }
  Tensor g = rnd({4, 9}, 32, DType::f64, 3.0), u = rnd({4, 9}, 33), dh = rnd({4, 9}, 34);
  Tensor dg, du;
  swiglu_backward(dh, g, u, dg, du);
  fd_check("swiglu", {g, u}, [](const std::vector<Tensor>& in) { return swiglu_forward(in[0], in[1]); }, dh,
           {{0, dg}, {1, du}});
  CHECK_ERROR_CONTAINS(swiglu_forward(g, rnd({4, 8}, 1)), "swiglu_forward: up has shape [4, 8], expected [4, 9]");
  CHECK_ERROR_CONTAINS(swiglu_forward(g, u.to(DType::f32)), "swiglu_forward: up has dtype f32 but gate has dtype f64");
}

// ================================================================== gated low-rank (SMoRA)

// The dense products of nn_ops.h's formulas, in f64 from the inputs' values.
GatedLowrankOutput dense_gated_lowrank(const Tensor& x, const Tensor& a, const Tensor& b, const Tensor& s,
                                       const Tensor& m, double c) {
  const Tensor xd = x.to(DType::f64), ad = a.to(DType::f64), bd = b.to(DType::f64), sd = s.to(DType::f64);
  const Tensor md = cast(m, DType::f64);
  GatedLowrankOutput o;
  o.g = mul(div(mul(sd, md), sum(mul(sd, md), {-1}, true)), c);
  o.h = mul(matmul(xd, ad.t()), md);
  o.y = matmul(mul(o.g, o.h), bd.t());
  return o;
}

TEST_CASE("gated_lowrank: the sparse CPU kernel equals the dense products, forward and backward, any thread count") {
  // 37 tokens, in 50, 12 ranks of which 4 selected (top-k of the scores), out 19: no size a
  // multiple of the vector width. One token selects a single rank (its ds is exactly 0).
  const int64_t T = 37, in = 50, r = 12, out = 19;
  for (DType t : {DType::f64, DType::f32, DType::bf16}) {
    CAPTURE(t);
    Tensor x = rnd({T, in}, 40, t), a = rnd({r, in}, 41, t), b = rnd({out, r}, 42, t), dy = rnd({T, out}, 43, t);
    Tensor s = add(abs(rnd({T, r}, 44, DType::f64)), 0.1).to(t);
    Tensor m = topk_mask(s, 4);
    std::vector<int64_t> mv(static_cast<size_t>(T * r), 0);
    const std::vector<double> m0 = vals(m);
    for (size_t i = 0; i < mv.size(); ++i) mv[i] = m0[i] != 0;
    for (int64_t i = 0; i < r; ++i) mv[static_cast<size_t>(5 * r + i)] = i == 7;
    m = ne(from_vector(mv, {T, r}), int64_t{0});
    const double c = 2.0;
    const GatedLowrankOutput ref = dense_gated_lowrank(x, a, b, s, m, c);
    // backward from the same formulas
    const Tensor dyd = dy.to(DType::f64), md = cast(m, DType::f64);
    const Tensor u = matmul(dyd, b.to(DType::f64)), gu = mul(ref.g, u);
    const Tensor dx_ref = matmul(gu, a.to(DType::f64)), da_ref = matmul(gu.t(), x.to(DType::f64));
    const Tensor db_ref = matmul(dyd.t(), mul(ref.g, ref.h));
    const Tensor dg = mul(u, ref.h), z = sum(mul(s.to(DType::f64), md), {-1}, true);
    const Tensor ds_ref = mul(mul(div(sub(dg, div(sum(mul(dg, ref.g), {-1}, true), c)), z), c), md);

    const double tol = t == DType::bf16 ? 2e-2 : (t == DType::f32 ? 1e-4 : 1e-12);
    const int threads = omp_get_max_threads();
    for (int n : {1, 2}) {
      CAPTURE(n);
      omp_set_num_threads(n);
      const GatedLowrankOutput o = gated_lowrank_forward(x, a, b, s, m, c);
      const GatedLowrankGrads d = gated_lowrank_backward(dy, x, a, b, s, m, o.h, o.g, c);
      omp_set_num_threads(threads);
      check_close(o.y, vals(ref.y), tol, tol, "y");
      check_close(o.h, vals(ref.h), tol, tol, "h");
      check_close(o.g, vals(ref.g), tol, tol, "g");
      // The gradients from the kernel's own h and g (bf16-rounded like the kernel's).
      check_close(d.dx, vals(dx_ref), tol, 4 * tol, "dx");
      check_close(d.da, vals(da_ref), tol, 4 * tol, "dA");
      check_close(d.db, vals(db_ref), tol, 4 * tol, "dB");
      check_close(d.ds, vals(ds_ref), tol, 4 * tol, "ds");
      const std::vector<double> ds5 = vals(d.ds.narrow(0, 5, 1));
      for (double v : ds5) CHECK(v == 0.0);
    }
  }
  Tensor x = rnd({3, 4}, 1), a = rnd({5, 4}, 2), b = rnd({6, 5}, 3), s = rnd({3, 5}, 4);
  CHECK_ERROR_CONTAINS(gated_lowrank_forward(x, a, b, s, gt(s, 0.0).narrow(1, 0, 4), 1.0),
                       "gated_lowrank_forward: selected has shape [3, 4], expected [3, 5]");
  CHECK_ERROR_CONTAINS(gated_lowrank_forward(x, a, rnd({6, 4}, 3), s, gt(s, 0.0), 1.0),
                       "gated_lowrank_forward: B has shape [6, 4], expected [6, 5]");
  CHECK_ERROR_CONTAINS(gated_lowrank_forward(x, a, b, s, s, 1.0), "selected has dtype f64, expected bool");
}

TEST_CASE("router_backward: the sparse sigmoid kernel equals the dense products; dx_into accumulates") {
  const int64_t T = 29, in = 37, r = 10;
  for (DType t : {DType::f64, DType::f32}) {
    CAPTURE(t);
    Tensor x = rnd({T, in}, 50, t), w = rnd({r, in}, 51, t);
    Tensor s = sigmoid(matmul(x, w.t()));
    Tensor m = topk_mask(s, 3);
    Tensor ds = mul(rnd({T, r}, 52, t), cast(m, t));  // zero outside the selection, as gated_lowrank gives
    const Tensor sd = s.to(DType::f64), dl = mul(mul(ds.to(DType::f64), sd), add(neg(sd), 1.0));
    const Tensor dx_ref = matmul(dl, w.to(DType::f64)), dw_ref = matmul(dl.t(), x.to(DType::f64));
    const double tol = t == DType::f32 ? 1e-5 : 1e-12;
    const int threads = omp_get_max_threads();
    for (int n : {1, 2}) {
      CAPTURE(n);
      omp_set_num_threads(n);
      RouterGrads d = router_backward(ds, x, w, s, m, RouterScore::sigmoid);
      Tensor into = rnd({T, in}, 53, t);
      const std::vector<double> before = vals(into);
      RouterGrads d2 = router_backward(ds, x, w, s, m, RouterScore::sigmoid, into);
      omp_set_num_threads(threads);
      check_close(d.dx, vals(dx_ref), tol, tol, "dx");
      check_close(d.dw, vals(dw_ref), tol, tol, "dW");
      std::vector<double> sum_ref = vals(dx_ref);
      for (size_t i = 0; i < sum_ref.size(); ++i) sum_ref[i] += before[i];
      check_close(into, sum_ref, tol, tol, "dx_into + dx");
      CHECK(d2.dx.data_ptr() == into.data_ptr());
    }
  }
  Tensor x = rnd({3, 4}, 1), w = rnd({5, 4}, 2), s = rnd({3, 5}, 3);
  CHECK_ERROR_CONTAINS(router_backward(s, x, w, s, gt(s, 0.0), RouterScore::sigmoid, rnd({3, 5}, 4)),
                       "router_backward: dx_into has shape [3, 5], expected [3, 4]");
}

// ================================================================== attention

TEST_CASE("attention forward against explicit softmax(QK^T) with a causal mask, GQA heads") {
  const int64_t B = 2, S = 7, H = 6, HK = 2, D = 5;
  const double scale = 1.0 / std::sqrt(double(D));
  for (DType t : {DType::f64, DType::f32, DType::bf16, DType::f16}) {
    Tensor q = rnd({B, S, H, D}, 40, t), k = rnd({B, S, HK, D}, 41, t), v = rnd({B, S, HK, D}, 42, t);
    AttentionRef ref = attention_ref(q, k, v, scale, std::vector<int64_t>(S, 0));
    AttentionOutput r = attention_forward(q, k, v, scale);
    CHECK(r.out.dtype() == t);
    CHECK(r.lse.shape() == Shape({B, H, S}));
    CHECK(r.lse.dtype() == (t == DType::f64 ? DType::f64 : DType::f32));
    const Tol tol = forward_tol(t);
    check_close(r.out, ref.out, tol.rtol, tol.atol, std::string("attention out ") + dtype_name(t));
    check_close(r.lse, ref.lse, t == DType::f64 ? 1e-12 : 1e-5, t == DType::f64 ? 1e-12 : 1e-5, "attention lse");
  }
  // GQA equals multi-head attention with each kv head repeated for its group: query head h reads
  // kv head h / 3 (heads 0-2 -> 0, 3-5 -> 1)
  Tensor q = rnd({B, S, H, D}, 43), k = rnd({B, S, HK, D}, 44), v = rnd({B, S, HK, D}, 45);
  Tensor rep = tensor<int64_t>({0, 0, 0, 1, 1, 1});
  AttentionOutput gqa = attention_forward(q, k, v, scale);
  AttentionOutput mha = attention_forward(q, index_select(k, 2, rep), index_select(v, 2, rep), scale);
  check_close(gqa.out, vals(mha.out), 1e-12, 1e-12, "gqa == repeated mha");
  // the first query attends to itself only: out = v of its kv head
  const std::vector<double> ov = vals(gqa.out), vv = vals(v);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t c = 0; c < D; ++c) CHECK(ov[h * D + c] == doctest::Approx(vv[(h / 3) * D + c]).epsilon(1e-12));
  // strided inputs: q built as [B, H, S, D] and transposed
  Tensor qt = rnd({B, H, S, D}, 46).transpose(1, 2);
  check_close(attention_forward(qt, k, v, scale).out, attention_ref(qt, k, v, scale, std::vector<int64_t>(S, 0)).out,
              1e-12, 1e-12, "strided q");
}

TEST_CASE("attention with cu_seqlens equals running each document separately") {
  const int64_t S = 10, H = 4, HK = 2, D = 3;
  const std::vector<int32_t> cu = {0, 3, 3, 7, 10};  // includes an empty document
  Tensor q = rnd({1, S, H, D}, 50), k = rnd({1, S, HK, D}, 51), v = rnd({1, S, HK, D}, 52);
  Tensor cus = from_vector(cu, {5});
  AttentionOutput packed = attention_forward(q, k, v, 0.5, cus);
  check_close(packed.out, attention_ref(q, k, v, 0.5, docs_of(cu)).out, 1e-12, 1e-12, "packed vs masked reference");
  for (size_t d = 0; d + 1 < cu.size(); ++d) {
    const int64_t start = cu[d], len = cu[d + 1] - cu[d];
    if (len == 0) continue;
    AttentionOutput alone = attention_forward(q.narrow(1, start, len), k.narrow(1, start, len),
                                              v.narrow(1, start, len), 0.5);
    check_close(packed.out.narrow(1, start, len), vals(alone.out), 1e-12, 1e-12, "document " + std::to_string(d));
    check_close(packed.lse.narrow(2, start, len), vals(alone.lse), 1e-12, 1e-12, "document lse");
  }
  // without cu_seqlens the later documents see earlier ones: the results differ
  CHECK(vals(attention_forward(q, k, v, 0.5).out) != vals(packed.out));
}

TEST_CASE("attention backward matches finite differences (GQA, and packed documents)") {
  {
    Tensor q = rnd({2, 5, 4, 3}, 60), k = rnd({2, 5, 2, 3}, 61), v = rnd({2, 5, 2, 3}, 62), up = rnd({2, 5, 4, 3}, 63);
    AttentionOutput r = attention_forward(q, k, v, 0.7);
    AttentionGrads g = attention_backward(up, q, k, v, r.out, r.lse, 0.7);
    fd_check("attention", {q, k, v},
             [](const std::vector<Tensor>& in) { return attention_forward(in[0], in[1], in[2], 0.7).out; }, up,
             {{0, g.dq}, {1, g.dk}, {2, g.dv}});
  }
  {
    Tensor cu = tensor<int32_t>({0, 3, 7});
    Tensor q = rnd({1, 7, 3, 2}, 64), k = rnd({1, 7, 1, 2}, 65), v = rnd({1, 7, 1, 2}, 66), up = rnd({1, 7, 3, 2}, 67);
    AttentionOutput r = attention_forward(q, k, v, 1.3, cu);
    AttentionGrads g = attention_backward(up, q, k, v, r.out, r.lse, 1.3, cu);
    fd_check("attention packed", {q, k, v},
             [&](const std::vector<Tensor>& in) { return attention_forward(in[0], in[1], in[2], 1.3, cu).out; }, up,
             {{0, g.dq}, {1, g.dk}, {2, g.dv}});
  }
}

TEST_CASE("attention validates heads, shapes, dtypes and cu_seqlens") {
  Tensor q = rnd({1, 6, 4, 2}, 1, DType::f32), k = rnd({1, 6, 3, 2}, 2, DType::f32);
  CHECK_ERROR_CONTAINS(attention_forward(q, k, k, 1.0), "attention_forward: 4 query heads are not a multiple of 3 kv heads");
  Tensor k2 = rnd({1, 6, 2, 2}, 3, DType::f32);
  CHECK_ERROR_CONTAINS(attention_forward(q, k2, rnd({1, 6, 2, 3}, 4, DType::f32), 1.0), "k [1, 6, 2, 2] and v [1, 6, 2, 3] differ");
  CHECK_ERROR_CONTAINS(attention_forward(q, rnd({1, 5, 2, 2}, 3, DType::f32), rnd({1, 5, 2, 2}, 3, DType::f32), 1.0),
                       "does not match q [1, 6, 4, 2]");
  CHECK_ERROR_CONTAINS(attention_forward(q, k2.to(DType::bf16), k2, 1.0), "k has dtype bf16 but q has dtype f32");
  CHECK_ERROR_CONTAINS(attention_forward(q, k2, k2, 1.0, tensor<int32_t>({0, 4, 2, 6})),
                       "cu_seqlens [0, 4, 2, 6] decreases at entry 2");
  CHECK_ERROR_CONTAINS(attention_forward(q, k2, k2, 1.0, tensor<int32_t>({0, 4})),
                       "cu_seqlens [0, 4] must end at the sequence length 6");
  CHECK_ERROR_CONTAINS(attention_forward(q, k2, k2, 1.0, tensor<int32_t>({1, 6})), "must start at 0");
  CHECK_ERROR_CONTAINS(attention_forward(q, k2, k2, 1.0, tensor<float>({0.f, 6.f})), "cu_seqlens has dtype f32");
  Tensor qb = rnd({2, 6, 4, 2}, 5, DType::f32), kb = rnd({2, 6, 2, 2}, 6, DType::f32);
  CHECK_ERROR_CONTAINS(attention_forward(qb, kb, kb, 1.0, tensor<int32_t>({0, 6})),
                       "cu_seqlens needs packed input with batch 1, got batch 2");
  AttentionOutput r = attention_forward(q, k2, k2, 1.0);
  CHECK_ERROR_CONTAINS(attention_backward(q, q, k2, k2, r.out, r.lse.narrow(2, 0, 5), 1.0),
                       "attention_backward: lse has shape [1, 4, 5], expected [1, 4, 6]");
}

// ================================================================== cross-entropy

TEST_CASE("cross-entropy forward against log-softmax by hand, ignore_index rows") {
  const int64_t N = 5, V = 7;
  for (DType t : {DType::f64, DType::f32, DType::bf16}) {
    Tensor logits = rnd({N, V}, 70, t, 3.0);
    Tensor targets = tensor<int64_t>({3, -100, 0, 6, -100});
    const std::vector<double> x = vals(logits);
    std::vector<double> loss(N), lse(N);
    for (int64_t i = 0; i < N; ++i) {
      double z = 0;
      for (int64_t j = 0; j < V; ++j) z += std::exp(x[i * V + j]);
      lse[i] = std::log(z);
      const int64_t ti = targets.to_vector<int64_t>()[i];
      loss[i] = ti == -100 ? 0.0 : -(x[i * V + ti] - lse[i]);  // -log_softmax at the target
    }
    CrossEntropyOutput r = cross_entropy_forward(logits, targets);
    CHECK(r.losses.dtype() == (t == DType::f64 ? DType::f64 : DType::f32));
    const double tol = t == DType::f64 ? 1e-12 : 1e-5;
    check_close(r.losses, loss, tol, tol, std::string("ce losses ") + dtype_name(t));
    check_close(r.lse, lse, tol, tol, "ce lse");
    CHECK(vals(r.losses)[1] == 0.0);
  }
  // a custom ignore_index; i32 targets; huge logits stay finite
  Tensor big = from_vector<float>({1000.f, 0.f, -1000.f, 5.f, 5.f, 5.f}, {2, 3});
  CrossEntropyOutput r = cross_entropy_forward(big, tensor<int32_t>({1, 2}), 2);
  check_close(r.losses, {1000.0, 0.0}, 1e-6, 1e-6, "large logits, ignore_index 2");
}

TEST_CASE("cross-entropy backward matches finite differences with per-row upstream gradients") {
  Tensor logits = rnd({6, 5}, 80, DType::f64, 2.0);
  Tensor targets = tensor<int64_t>({4, 0, -1, 2, 2, -1});
  Tensor g = rnd({6}, 81);
  CrossEntropyOutput r = cross_entropy_forward(logits, targets, -1);
  Tensor dl = cross_entropy_backward(g, logits, targets, r.lse, -1);
  fd_check("cross_entropy", {logits},
           [&](const std::vector<Tensor>& in) { return cross_entropy_forward(in[0], targets, -1).losses; }, g,
           {{0, dl}});
  const std::vector<double> dv = vals(dl);
  for (int64_t j = 0; j < 5; ++j) CHECK(dv[2 * 5 + j] == 0.0);  // ignored row
  // each non-ignored row sums to zero (softmax minus one-hot)
  double row0 = 0;
  for (int64_t j = 0; j < 5; ++j) row0 += dv[j];
  CHECK(std::fabs(row0) < 1e-12);
  // f32 dlosses with f32 logits
  Tensor l32 = logits.to(DType::f32);
  CrossEntropyOutput r32 = cross_entropy_forward(l32, targets, -1);
  check_close(cross_entropy_backward(g.to(DType::f32), l32, targets, r32.lse, -1), dv, 1e-5, 1e-6, "f32 backward");
}

TEST_CASE("cross-entropy validates targets and shapes") {
  Tensor logits = rnd({3, 5}, 1, DType::f32);
  CHECK_ERROR_CONTAINS(cross_entropy_forward(logits, tensor<int64_t>({0, 5, 1})),
                       "cross_entropy_forward: target 5 at row 1 is out of range for 5 classes (ignore_index -100)");
  CHECK_ERROR_CONTAINS(cross_entropy_forward(logits, tensor<int64_t>({0, 1})),
                       "cross_entropy_forward: targets has shape [2], expected [3]");
  CHECK_ERROR_CONTAINS(cross_entropy_forward(logits, tensor<float>({0, 1, 2})), "targets have dtype f32");
  CHECK_ERROR_CONTAINS(cross_entropy_forward(rnd({3}, 1, DType::f32), tensor<int64_t>({0, 1, 2})),
                       "logits must be [N, V]");
  CrossEntropyOutput r = cross_entropy_forward(logits, tensor<int64_t>({0, 1, 2}));
  CHECK_ERROR_CONTAINS(cross_entropy_backward(ones({2}), logits, tensor<int64_t>({0, 1, 2}), r.lse),
                       "cross_entropy_backward: dlosses has shape [2], expected [3]");
}

// CPU hot-path kernels at the 125M LLaMA training shape (4 rows x 256 tokens, hidden 768, 12 query /
// 4 kv heads of 64, intermediate 2048, vocabulary 32000): each mlr kernel next to the scalar loop
// it replaced (kept here as the baseline, compiled with the same flags), median of repetitions,
// called directly on preallocated outputs (no allocation in the timing), in GB/s (bytes read +
// written once) or GFLOP/s (attention: the causal half of 4 S^2 d per head
// forward, 10 S^2 d backward; matmul: 2 m n k).
//
//   cpu_kernels_bench [repetitions=9]
//
// MLR_CPU_SIMD=avx2 or generic caps the kernels' instruction set (tensor/kernels/cpu/simd.h), so
// the fallbacks can be timed on an AVX-512 machine; OMP_NUM_THREADS sets the threads.
#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>
#include <vector>

#include "tensor/kernels/cpu/kernels.h"
#include "tensor/kernels/cpu/simd.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"

using namespace mlr;

namespace {

int g_repetitions = 9;

template <typename F>
double median_seconds(F&& f) {
  f();  // warm-up: page faults, thread pools
  std::vector<double> t;
  for (int r = 0; r < g_repetitions; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// ---- the scalar loops the kernels replaced (f32) ----

void baseline_rmsnorm(const float* x, const float* w, float* y, float* rstd, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float ss = 0;
    for (int64_t j = 0; j < d; ++j) ss += x[r * d + j] * x[r * d + j];
    const float rs = 1.0f / std::sqrt(ss / d + 1e-6f);
    rstd[r] = rs;
    for (int64_t j = 0; j < d; ++j) y[r * d + j] = x[r * d + j] * rs * w[j];
  }
}

void baseline_swiglu(const float* g, const float* u, float* h, int64_t n) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

void baseline_cross_entropy(const float* x, float* lse, int64_t n, int64_t vocab) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < vocab; ++j) m = std::max(m, x[i * vocab + j]);
    float s = 0;
    for (int64_t j = 0; j < vocab; ++j) s += std::exp(x[i * vocab + j] - m);
    lse[i] = m + std::log(s);
  }
}

float dot(const float* a, const float* b, int64_t d) {
  float s = 0;
  for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
  return s;
}

// One query row at a time over its causal keys (the former reference kernel).
void baseline_attention_forward(const float* q, const float* k, const float* v, float* o, float* lse, int64_t B,
                                int64_t S, int64_t H, int64_t HK, int64_t D, float scale) {
  const int64_t group = H / HK;
#pragma omp parallel
  {
    std::vector<float> p(S), acc(D);
#pragma omp for collapse(3) schedule(dynamic, 16)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < S; ++i) {
          const float* qi = q + ((b * S + i) * H + h) * D;
          float m = -std::numeric_limits<float>::infinity();
          for (int64_t j = 0; j <= i; ++j) {
            p[j] = scale * dot(qi, k + ((b * S + j) * HK + h / group) * D, D);
            m = std::max(m, p[j]);
          }
          float l = 0;
          for (int64_t j = 0; j <= i; ++j) l += (p[j] = std::exp(p[j] - m));
          std::fill(acc.begin(), acc.end(), 0.0f);
          for (int64_t j = 0; j <= i; ++j)
            for (int64_t c = 0; c < D; ++c) acc[c] += p[j] * v[((b * S + j) * HK + h / group) * D + c];
          for (int64_t c = 0; c < D; ++c) o[((b * S + i) * H + h) * D + c] = acc[c] / l;
          lse[(b * H + h) * S + i] = m + std::log(l);
        }
  }
}

struct Row {
  std::string kernel, unit;
  double amount;  // bytes or flops per call
  double mlr_s, baseline_s;
};

void print(const std::vector<Row>& rows) {
  fmt::print("{:<34} {:>12} {:>12} {:>9} {:>9} {:>8}\n", "kernel", "mlr", "baseline", "mlr ms", "base ms", "speedup");
  for (const Row& r : rows) {
    auto rate = [&](double s) { return s > 0 ? fmt::format("{:.1f} {}", r.amount / s / 1e9, r.unit) : "-"; };
    fmt::print("{:<34} {:>12} {:>12} {:>9.3f} {:>9} {:>8}\n", r.kernel, rate(r.mlr_s), rate(r.baseline_s),
               r.mlr_s * 1e3, r.baseline_s > 0 ? fmt::format("{:.3f}", r.baseline_s * 1e3) : "-",
               r.baseline_s > 0 ? fmt::format("{:.2f}x", r.baseline_s / r.mlr_s) : "-");
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1) g_repetitions = std::max(1, std::atoi(argv[1]));
  const int64_t B = 4, S = 256, H = 12, HK = 4, D = 64, hidden = 768, inter = 2048, vocab = 32000;
  const int64_t tokens = B * S;
  fmt::print("cpu_kernels_bench: {} threads, simd level {}, avx512-bf16 {}, median of {}\n", omp_get_max_threads(),
             cpu::simd_level_name(cpu::simd_level()), cpu::cpu_has_avx512_bf16() ? "yes" : "no", g_repetitions);
  Generator gen(7);
  std::vector<Row> rows;
  const double f4 = 4.0;

  {  // RMSNorm [tokens, hidden]
    Tensor x = randn({tokens, hidden}, gen), w = randn({hidden}, gen), dy = randn({tokens, hidden}, gen);
    RmsNormOutput r = rmsnorm_forward(x, w, 1e-6);
    Tensor y = empty_like(x), rstd = empty({tokens});
    const double bytes = 2.0 * x.numel() * f4;
    rows.push_back({"rmsnorm forward f32", "GB/s", bytes,
                    median_seconds([&] { cpu::rmsnorm_forward(x, w, 1e-6, y, rstd); }),
                    median_seconds([&] {
                      baseline_rmsnorm(x.data<float>(), w.data<float>(), y.data<float>(), rstd.data<float>(), tokens,
                                       hidden);
                    })});
    Tensor dx = empty_like(x), dw = empty_like(w);
    rows.push_back({"rmsnorm backward f32 (dx, dw)", "GB/s", 4.0 * x.numel() * f4,
                    median_seconds([&] { cpu::rmsnorm_backward(dy, x, w, r.rstd, dx, &dw); }), 0});
    Tensor xb = x.to(DType::bf16), wb = w.to(DType::bf16), yb = empty_like(xb);
    rows.push_back({"rmsnorm forward bf16", "GB/s", bytes / 2,
                    median_seconds([&] { cpu::rmsnorm_forward(xb, wb, 1e-6, yb, rstd); }), 0});
  }
  {  // RoPE on q [B, S, H, D]
    Tensor x = randn({B, S, H, D}, gen), pos = arange(S), y = empty_like(x);
    Tensor cos = empty({S, D / 2}), sin = empty({S, D / 2});
    std::vector<float> f(D / 2);
    for (int64_t i = 0; i < D / 2; ++i) f[i] = std::pow(10000.0f, -2.0f * i / D);
    const Tensor inv = from_vector(f, {D / 2});
    rope_tables(pos, inv, cos, sin);
    rows.push_back({"rope forward f32 (q)", "GB/s", 2.0 * x.numel() * f4,
                    median_seconds([&] { cpu::rope_forward(y, x, cos, sin, RopeLayout::half); }), 0});
  }
  {  // SwiGLU [tokens, intermediate]
    Tensor g = randn({tokens, inter}, gen), u = randn({tokens, inter}, gen), dh = randn({tokens, inter}, gen);
    Tensor h = empty_like(g);
    rows.push_back({"swiglu forward f32", "GB/s", 3.0 * g.numel() * f4,
                    median_seconds([&] { cpu::swiglu_forward(h, g, u); }),
                    median_seconds([&] { baseline_swiglu(g.data<float>(), u.data<float>(), h.data<float>(), g.numel()); })});
    Tensor dg = empty_like(g), du = empty_like(g);
    rows.push_back({"swiglu backward f32", "GB/s", 5.0 * g.numel() * f4,
                    median_seconds([&] { cpu::swiglu_backward(dh, g, u, dg, du); }), 0});
  }
  {  // cross-entropy [tokens, vocab]
    Tensor logits = randn({tokens, vocab}, gen), lse = empty({tokens});
    std::vector<int64_t> ids(tokens);
    for (int64_t i = 0; i < tokens; ++i) ids[i] = (i * 7919) % vocab;
    const Tensor targets = from_vector(ids, {tokens});
    CrossEntropyOutput ce = cross_entropy_forward(logits, targets);
    Tensor g = ones({tokens}), losses = empty({tokens}), dlogits = empty_like(logits);
    rows.push_back({"cross-entropy forward f32", "GB/s", 1.0 * logits.numel() * f4,
                    median_seconds([&] { cpu::cross_entropy_forward(logits, targets, -100, losses, lse); }),
                    median_seconds([&] { baseline_cross_entropy(logits.data<float>(), lse.data<float>(), tokens, vocab); })});
    rows.push_back({"cross-entropy backward f32", "GB/s", 2.0 * logits.numel() * f4,
                    median_seconds([&] { cpu::cross_entropy_backward(dlogits, g, logits, targets, ce.lse, -100); }),
                    0});
  }
  {  // attention
    Tensor q = randn({B, S, H, D}, gen), k = randn({B, S, HK, D}, gen), v = randn({B, S, HK, D}, gen);
    Tensor dout = randn({B, S, H, D}, gen), o = empty_like(q), lse = empty({B, H, S});
    Tensor dq = empty_like(q), dk = empty_like(k), dv = empty_like(v);
    const float scale = 1.0f / std::sqrt(float(D));
    const double causal = 0.5 * double(S) * S * D * B * H;
    AttentionOutput r = attention_forward(q, k, v, scale);
    rows.push_back({"attention forward f32", "GFLOP/s", 4.0 * causal,
                    median_seconds([&] { cpu::attention_forward(q, k, v, scale, Tensor(), o, lse); }),
                    median_seconds([&] {
                      baseline_attention_forward(q.data<float>(), k.data<float>(), v.data<float>(), o.data<float>(),
                                                 lse.data<float>(), B, S, H, HK, D, scale);
                    })});
    rows.push_back({"attention backward f32", "GFLOP/s", 10.0 * causal,
                    median_seconds([&] { cpu::attention_backward(dout, q, k, v, r.out, r.lse, scale, Tensor(), dq, dk, dv); }),
                    0});
    Tensor qb = q.to(DType::bf16), kb = k.to(DType::bf16), vb = v.to(DType::bf16), ob = empty_like(qb);
    rows.push_back({"attention forward bf16", "GFLOP/s", 4.0 * causal,
                    median_seconds([&] { cpu::attention_forward(qb, kb, vb, scale, Tensor(), ob, lse); }), 0});
  }
  {  // the q projection's GEMM shapes: x [tokens, hidden] @ W^T, W [inter, hidden]
    for (DType t : {DType::f32, DType::bf16}) {
      Tensor x = randn({tokens, hidden}, gen, t), w = randn({inter, hidden}, gen, t), out = empty({tokens, inter}, t);
      rows.push_back({fmt::format("matmul {} x@W^T {}x{}x{}", dtype_name(t), tokens, inter, hidden), "GFLOP/s",
                      2.0 * tokens * inter * hidden,
                      median_seconds([&] { cpu::matmul(out.unsqueeze(0), x.unsqueeze(0), w.t().unsqueeze(0)); }), 0});
    }
  }
  print(rows);
  return 0;
}

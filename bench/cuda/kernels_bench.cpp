// CUDA kernel benchmark (issue 3 targets): one table with, for each fused kernel at LLaMA-7B shapes
// (8192 tokens x 4096 hidden, 11008 intermediate, 32000 vocabulary), the achieved GB/s against the
// device-to-device copy bandwidth measured in the same run, and for GEMM and attention the TFLOP/s
// against the bf16 GEMM rate at 8192^3 measured in the same run.
// Bytes counted: what the kernel must read and write at least once (inputs + outputs).
// Attention FLOPs as in shared/BASELINES.md: 4*B*H*S^2*D/2 forward (causal), 2.5x that backward.
// Usage: kernels_bench [--quick | --smoke]   (--quick: smaller shapes; --smoke: tiny shapes, one run each)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/cuda/runtime.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

using namespace mlr;

namespace {

bool g_smoke = false;  // --smoke: one run of each kernel at tiny shapes (a check that all of it runs)

// Median of `reps` timed runs after `warmup` untimed ones, in seconds.
double time_it(const std::function<void()>& fn, int warmup = 3, int reps = 10) {
  if (g_smoke) {
    warmup = 0;
    reps = 1;
  }
  for (int i = 0; i < warmup; ++i) fn();
  cuda::synchronize(0);
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    fn();
    cuda::synchronize(0);
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

struct Row {
  std::string kernel, shape;
  double ms, rate;  // GB/s or TFLOP/s
  const char* unit;
  double ceiling;
};

Tensor rnd(const Shape& s, DType t) {
  static Generator g(1);
  return randn(s, g, {t, Device::cuda(0)});
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::printf("kernels_bench: no CUDA device on this machine\n");
    return 0;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  g_smoke = argc > 1 && std::strcmp(argv[1], "--smoke") == 0;
  const int64_t tokens = g_smoke ? 64 : quick ? 1024 : 8192, hidden = g_smoke ? 256 : 4096,
                inter = g_smoke ? 512 : quick ? 4096 : 11008, vocab = g_smoke ? 1000 : 32000;
  const int64_t gemm_n = g_smoke ? 128 : quick ? 4096 : 8192;
  const DType bf = DType::bf16;
  std::vector<Row> rows;

  // Ceilings measured here: copy bandwidth (bytes read + written) and the bf16 GEMM rate.
  Tensor big = rnd({int64_t(1) << (g_smoke ? 16 : quick ? 28 : 30)}, DType::f32);  // 1 or 4 GiB
  Tensor big_dst = empty_like(big);
  const double copy_s = time_it([&] { big_dst.copy_(big); });
  const double copy_gbs = 2.0 * big.numel() * 4 / copy_s / 1e9;
  Tensor ga = rnd({gemm_n, gemm_n}, bf), gb = rnd({gemm_n, gemm_n}, bf);
  const double gemm_s = time_it([&] { matmul(ga, gb); });
  const double gemm_tflops = 2.0 * gemm_n * gemm_n * gemm_n / gemm_s / 1e12;
  rows.push_back({"device copy (ceiling)", fmt::format("{} MiB", big.numel() * 4 >> 20), copy_s * 1e3, copy_gbs, "GB/s", copy_gbs});
  rows.push_back({"bf16 GEMM (ceiling)", fmt::format("{}^3", gemm_n), gemm_s * 1e3, gemm_tflops, "TFLOP/s", gemm_tflops});
  big = Tensor();
  big_dst = Tensor();

  auto bandwidth = [&](const std::string& name, const std::string& shape, double bytes, const std::function<void()>& fn) {
    const double s = time_it(fn);
    rows.push_back({name, shape, s * 1e3, bytes / s / 1e9, "GB/s", copy_gbs});
  };
  auto flops = [&](const std::string& name, const std::string& shape, double flop, const std::function<void()>& fn) {
    const double s = time_it(fn);
    rows.push_back({name, shape, s * 1e3, flop / s / 1e12, "TFLOP/s", gemm_tflops});
  };
  const double e = 2.0;  // bytes per bf16 element

  {  // RMSNorm
    Tensor x = rnd({tokens, hidden}, bf), w = rnd({hidden}, bf), dy = rnd({tokens, hidden}, bf);
    RmsNormOutput f = rmsnorm_forward(x, w, 1e-5);
    const std::string shape = fmt::format("{} x {}", tokens, hidden);
    bandwidth("rmsnorm forward", shape, 2 * e * tokens * hidden, [&] { rmsnorm_forward(x, w, 1e-5); });
    bandwidth("rmsnorm backward (frozen w)", shape, 3 * e * tokens * hidden,
              [&] { rmsnorm_backward(dy, x, w, f.rstd, nullptr); });
    Tensor dw;
    bandwidth("rmsnorm backward (with dw)", shape, 3 * e * tokens * hidden,
              [&] { rmsnorm_backward(dy, x, w, f.rstd, &dw); });
  }
  {  // RoPE on q: [1, tokens, 32, 128]
    Tensor q = rnd({1, tokens, 32, 128}, bf);
    Tensor positions = arange(0, tokens, 1, {DType::i64, Device::cuda(0)});
    Tensor inv_freq = rnd({64}, DType::f32);
    Tensor cos, sin;
    rope_tables(positions, inv_freq, cos, sin);
    const std::string shape = fmt::format("{} x 32 x 128", tokens);
    bandwidth("rope forward (half)", shape, 2 * e * q.numel(), [&] { rope_forward(q, cos, sin, RopeLayout::half); });
    bandwidth("rope backward (half)", shape, 2 * e * q.numel(), [&] { rope_backward(q, cos, sin, RopeLayout::half); });
  }
  {  // SwiGLU
    Tensor gate = rnd({tokens, inter}, bf), up = rnd({tokens, inter}, bf), dh = rnd({tokens, inter}, bf);
    const std::string shape = fmt::format("{} x {}", tokens, inter);
    bandwidth("swiglu forward", shape, 3 * e * gate.numel(), [&] { swiglu_forward(gate, up); });
    Tensor dg, du;
    bandwidth("swiglu backward", shape, 5 * e * gate.numel(), [&] { swiglu_backward(dh, gate, up, dg, du); });
  }
  {  // Cross-entropy over the vocabulary
    const int64_t n = g_smoke ? 64 : quick ? 1024 : 8192;
    Tensor logits = rnd({n, vocab}, bf);
    Tensor targets = arange(0, n, 1, {DType::i64, Device::cuda(0)});
    CrossEntropyOutput f = cross_entropy_forward(logits, targets);
    Tensor g = rnd({n}, DType::f32);
    const std::string shape = fmt::format("{} x {}", n, vocab);
    bandwidth("cross-entropy forward", shape, e * logits.numel(), [&] { cross_entropy_forward(logits, targets); });
    bandwidth("cross-entropy backward", shape, 2 * e * logits.numel(),
              [&] { cross_entropy_backward(g, logits, targets, f.lse); });
  }
  {  // GEMMs of a 7B layer
    Tensor x = rnd({tokens, hidden}, bf), wq = rnd({hidden, hidden}, bf), wup = rnd({inter, hidden}, bf);
    flops("GEMM q/k/v/o projection", fmt::format("{} x {} -> {}", tokens, hidden, hidden), 2.0 * tokens * hidden * hidden,
          [&] { linear(x, wq); });
    flops("GEMM up/gate", fmt::format("{} x {} -> {}", tokens, hidden, inter), 2.0 * tokens * hidden * inter,
          [&] { linear(x, wup); });
  }
  {  // Attention, batch 4 (1 in quick mode), 32 heads, seq 2048, head dim 128, causal
    const int64_t b = quick || g_smoke ? 1 : 4, s = g_smoke ? 128 : 2048, h = g_smoke ? 2 : 32, d = 128;
    Tensor q = rnd({b, s, h, d}, bf), k = rnd({b, s, h, d}, bf), v = rnd({b, s, h, d}, bf), dout = rnd({b, s, h, d}, bf);
    const double scale = 1.0 / std::sqrt(double(d));
    const double fwd = 4.0 * b * h * s * s * d / 2;
    const std::string shape = fmt::format("{} x {} x {} heads x {}", b, s, h, d);
    // The flash kernel (tensor cores) and the warp-per-row reference kernel it is tested against.
    for (auto [kernel, name] : {std::pair{cuda::AttentionKernel::flash, "flash"},
                                std::pair{cuda::AttentionKernel::reference, "reference"}}) {
      cuda::set_attention_kernel(kernel);
      AttentionOutput f = attention_forward(q, k, v, scale);
      flops(fmt::format("attention fwd, {} (causal)", name), shape, fwd, [&] { attention_forward(q, k, v, scale); });
      flops(fmt::format("attention bwd, {} (causal)", name), shape, 2.5 * fwd,
            [&] { attention_backward(dout, q, k, v, f.out, f.lse, scale); });
    }
    cuda::set_attention_kernel(cuda::AttentionKernel::automatic);
  }

  std::printf("%-30s %-28s %10s %12s %-8s %9s\n", "kernel", "shape", "time (ms)", "rate", "unit", "% ceiling");
  for (const Row& r : rows)
    std::printf("%-30s %-28s %10.3f %12.1f %-8s %8.1f%%\n", r.kernel.c_str(), r.shape.c_str(), r.ms, r.rate, r.unit,
                100.0 * r.rate / r.ceiling);
  return 0;
}

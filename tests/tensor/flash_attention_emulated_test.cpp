// The tensor-core flash attention kernels (tensor/kernels/cuda/attention_flash.cuh), run on the CPU
// under tensor/kernels/cuda/emulator.h and compared with the CPU attention: the same kernel source, tile
// loops, masks, online softmax and fragment arithmetic as on the GPU, checked in CI where there is
// no GPU. Outputs start as NaN, so an element a kernel forgets to write fails.
//
// What the emulation does not check: real parallel timing and the hardware's own accumulation
// order inside an mma; the GPU suite (ops_cuda_test) covers those.
#include <doctest/doctest.h>

#if defined(MLR_CUDA_KERNELS)

#include <cmath>
#include <string>
#include <vector>

#include "tensor/kernels/cuda/emulator.h"
// The emulator must come first: it defines the built-ins the kernel source uses.
#include "tensor/kernels/cuda/attention_flash.cuh"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

using namespace mlr;
namespace emu = mlr::cuda_emulation;

namespace {

struct Case {
  int64_t batch, seq, heads, kv_heads, dim;
  std::vector<int32_t> cu;
  int key_tile = 64;          // of forward and dQ (32 on devices with 99 KB of shared memory per block)
  unsigned grid_y_limit = 65535;  // batch x heads beyond it go to grid.z (lowered to test that path)
};

struct Results {
  Tensor out, lse, dq, dk, dv;
};

Tensor nan_like(const Tensor& t) { return full(t.shape(), NAN, {t.dtype()}); }

// The grid of the launches: row tiles x batch_heads_grid (attention_flash.cuh) with y at most `limit`.
dim3 grid_of(unsigned tiles, int64_t n, unsigned limit) {
  const std::pair<unsigned, unsigned> yz = mlr::cuda::batch_heads_grid(n, limit);
  return dim3(tiles, yz.first, yz.second);
}

template <typename T, int D, int KT>
Results run_emulated(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& cu,
                     double scale, unsigned grid_y_limit) {
  using namespace mlr::cuda;
  const Geometry geo = geometry_of(q, k, cu);
  Results r{nan_like(q), full({geo.batch, geo.heads, geo.seq}, NAN), nan_like(q), nan_like(k), nan_like(v)};
  Tensor dsum = full({geo.batch, geo.heads, geo.seq}, NAN);
  auto ptr = [](const Tensor& t) { return static_cast<T*>(t.data_ptr()); };
  auto fptr = [](const Tensor& t) { return static_cast<float*>(t.data_ptr()); };
  const float scale_f = float(scale), scale_log2 = scale_f * kLog2e;
  const unsigned tiles = row_tiles(geo);

  emu::launch(grid_of(tiles, geo.batch * geo.heads, grid_y_limit), dim3(kThreads), flash::forward_smem(D, KT), [&] {
    flash_forward_kernel<T, D, KT>(ptr(q), ptr(k), ptr(v), ptr(r.out), fptr(r.lse), geo, scale_log2);
  });
  const unsigned rows = unsigned(geo.batch * geo.heads * geo.seq);
  emu::launch(dim3((rows + kWarps - 1) / kWarps), dim3(kThreads), 0,
              [&] { flash_dsum_kernel<T, D>(ptr(dout), ptr(r.out), fptr(dsum), geo); });
  emu::launch(grid_of(tiles, geo.batch * geo.kv_heads, grid_y_limit), dim3(kThreads), flash::dkv_smem(D), [&] {
    flash_dkv_kernel<T, D>(ptr(dout), ptr(q), ptr(k), ptr(v), fptr(r.lse), fptr(dsum), ptr(r.dk), ptr(r.dv), geo,
                           scale_f, scale_log2);
  });
  emu::launch(grid_of(tiles, geo.batch * geo.heads, grid_y_limit), dim3(kThreads), flash::dq_smem(D, KT), [&] {
    flash_dq_kernel<T, D, KT>(ptr(dout), ptr(q), ptr(k), ptr(v), fptr(r.lse), fptr(dsum), ptr(r.dq), geo, scale_f,
                              scale_log2);
  });
  return r;
}

template <typename T>
Results run_case(const Case& c, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                 const Tensor& cu, double scale) {
  if (c.dim == 64)
    return c.key_tile == 64 ? run_emulated<T, 64, 64>(q, k, v, dout, cu, scale, c.grid_y_limit)
                            : run_emulated<T, 64, 32>(q, k, v, dout, cu, scale, c.grid_y_limit);
  return c.key_tile == 64 ? run_emulated<T, 128, 64>(q, k, v, dout, cu, scale, c.grid_y_limit)
                          : run_emulated<T, 128, 32>(q, k, v, dout, cu, scale, c.grid_y_limit);
}

// Largest |got - want| relative to the largest |want| of the tensor; NaN anywhere counts as 1e9.
double normalised_error(const Tensor& want, const Tensor& got) {
  const auto a = want.to(DType::f64).to_vector<double>(), b = got.to(DType::f64).to_vector<double>();
  double worst = 0, scale = 0;
  for (double x : a) scale = std::max(scale, std::abs(x));
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(b[i]) || std::isnan(a[i])) return 1e9;
    worst = std::max(worst, std::abs(a[i] - b[i]));
  }
  return worst / std::max(scale, 1e-30);
}

Tensor random_input(const Shape& shape, DType dtype, Generator& gen) {
  return add(mul(rand(shape, gen), 4.0), -2.0).to(dtype);
}

}  // namespace

TEST_CASE("flash attention kernels, emulated on the CPU, against the CPU attention") {
  // Shapes: partial tiles, several query and key tiles (tiles with and without masks), grouped
  // heads, both head dims, packed documents with an empty one and boundaries inside tiles.
  // 32-key tiles (the configuration of 99 KB devices) at both head dims, one with packed documents;
  // batch x heads split over grid.y and grid.z.
  const std::vector<Case> cases = {{2, 70, 2, 2, 64, {}},
                                   {1, 75, 4, 2, 128, {}},
                                   {1, 130, 2, 1, 64, {}},
                                   {1, 97, 2, 2, 64, {0, 10, 10, 47, 90, 97}},
                                   {1, 75, 4, 2, 128, {}, 32},
                                   {1, 97, 2, 2, 64, {0, 10, 10, 47, 90, 97}, 32},
                                   {2, 40, 6, 3, 64, {}, 64, 4}};
  Generator gen(424242);
  for (DType dtype : {DType::bf16, DType::f16}) {
    for (const Case& c : cases) {
      Tensor q = random_input({c.batch, c.seq, c.heads, c.dim}, dtype, gen);
      Tensor k = random_input({c.batch, c.seq, c.kv_heads, c.dim}, dtype, gen);
      Tensor v = random_input({c.batch, c.seq, c.kv_heads, c.dim}, dtype, gen);
      Tensor dout = random_input({c.batch, c.seq, c.heads, c.dim}, dtype, gen);
      Tensor cu = c.cu.empty() ? Tensor() : from_vector<int32_t>(c.cu, {int64_t(c.cu.size())});
      const double scale = 1.0 / std::sqrt(double(c.dim));

      AttentionOutput want = attention_forward(q, k, v, scale, cu);
      AttentionGrads want_grads = attention_backward(dout, q, k, v, want.out, want.lse, scale, cu);
      const Results got = dtype == DType::bf16 ? run_case<__nv_bfloat16>(c, q, k, v, dout, cu, scale)
                                               : run_case<__half>(c, q, k, v, dout, cu, scale);
      // Both sides take the same rounded inputs and compute in f32; the kernels also round P and
      // dS to the input dtype before their second products, as every flash attention does.
      const double bound = dtype == DType::bf16 ? 2e-2 : 4e-3;
      const std::string name =
          fmt::format("{} B={} S={} H={} Hkv={} D={}{} key tile {} grid.y <= {}", dtype_name(dtype), c.batch, c.seq,
                      c.heads, c.kv_heads, c.dim, c.cu.empty() ? "" : " packed", c.key_tile, c.grid_y_limit);
      const std::vector<std::pair<const char*, std::pair<Tensor, Tensor>>> outputs = {
          {"out", {want.out, got.out}},     {"lse", {want.lse, got.lse}}, {"dq", {want_grads.dq, got.dq}},
          {"dk", {want_grads.dk, got.dk}}, {"dv", {want_grads.dv, got.dv}}};
      for (const auto& [what, pair] : outputs) {
        const double err = normalised_error(pair.first, pair.second);
        MESSAGE(name << " " << std::string(what) << ": max error / max |value| = " << err);
        CHECK_MESSAGE(err <= bound, name << " " << std::string(what) << ": " << err << " > " << bound);
      }
    }
  }
}

TEST_CASE("cuda emulator: mma.sync m16n8k16 with the fragment layout of the PTX ISA; warp shuffles") {
  // A [16, 16] and B [16, 8] in bf16; lane (g, t) = (lane / 4, lane % 4) holds
  //   a[r] = A[g + 8 (r & 1)][2t + 8 (r >> 1) + {0, 1}],  b[r] = B[2t + 8 r + {0, 1}][g]
  // and receives D[g + 8 (e >> 1)][2t + (e & 1)] in d[e].
  std::vector<float> a(16 * 16), b(16 * 8), want(16 * 8, 0.f), got(16 * 8, NAN);
  for (size_t i = 0; i < a.size(); ++i) a[i] = __bfloat162float(__float2bfloat16(std::sin(0.7f * float(i))));
  for (size_t i = 0; i < b.size(); ++i) b[i] = __bfloat162float(__float2bfloat16(std::cos(1.3f * float(i))));
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 8; ++j)
      for (int k = 0; k < 16; ++k) want[i * 8 + j] += a[i * 16 + k] * b[k * 8 + j];
  auto pack = [](float lo, float hi) {
    return uint32_t(__bfloat16_as_ushort(__float2bfloat16(lo))) |
           (uint32_t(__bfloat16_as_ushort(__float2bfloat16(hi))) << 16);
  };
  std::vector<int> shuffled(32, -1);
  emu::launch(dim3(1), dim3(32), 0, [&] {
    const int lane = int(threadIdx.x), g = lane / 4, t = lane % 4;
    uint32_t ra[4];
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r & 1), col = 2 * t + 8 * (r >> 1);
      ra[r] = pack(a[row * 16 + col], a[row * 16 + col + 1]);
    }
    const uint32_t b0 = pack(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]);
    const uint32_t b1 = pack(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    emu::mma16816<__nv_bfloat16>(d, ra, b0, b1);
    for (int e = 0; e < 4; ++e) got[(g + 8 * (e >> 1)) * 8 + 2 * t + (e & 1)] = d[e];
    shuffled[lane] = __shfl_xor_sync(0xffffffffu, lane * 10, 5);
  });
  for (size_t i = 0; i < want.size(); ++i) CHECK(got[i] == doctest::Approx(want[i]).epsilon(1e-5));
  for (int lane = 0; lane < 32; ++lane) CHECK(shuffled[lane] == (lane ^ 5) * 10);
}

TEST_CASE("cuda emulator: a divergent __syncthreads is reported") {
  CHECK_THROWS_WITH_AS(emu::launch(dim3(1), dim3(64), 0,
                                   [] {
                                     if (threadIdx.x < 32) __syncthreads();
                                   }),
                       doctest::Contains("divergent"), std::runtime_error);
}

#endif  // MLR_CUDA_KERNELS

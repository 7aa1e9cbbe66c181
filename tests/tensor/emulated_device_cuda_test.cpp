// The emulated device itself (tensor/kernels/cuda/emulator.h, emulated_cudart.cpp), and what the CUDA
// backend does with the limits of each architecture. Runs only in the emulated CUDA build (on a GPU
// the same paths are covered by the real runtime and by compute-sanitizer in
// scripts/gpu_first_run.sh).
//
// One deliberately broken kernel per hazard class the emulator exists to catch: a missing
// __syncthreads (also one hidden behind a warp collective, which a whole-block scheduler would
// miss), a missing __syncwarp, out-of-bounds shared-memory writes (dynamic and static), a race
// between blocks on global memory, and launches the device refuses. Each test fails if the emulator
// stops catching its hazard, and checks that the repaired kernel passes, so a check that always
// complains fails too.
#include <doctest/doctest.h>

#ifdef MLR_CUDA_EMULATION

#include "tensor/kernels/cuda/emulator.h"
// The emulator comes first: it defines the built-ins the kernel source below uses.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "tensor/kernels/cuda/arch_limits.h"
#include "tensor/kernels/cuda/cuda_utils.cuh"
#include "tensor/kernels/cuda/kernels.h"
#include "tensor/kernels/cuda/runtime.h"
#include "tensor/nn_ops.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"
#include "tests/test_support.h"

using namespace mlr;
namespace emu = mlr::cuda_emulation;

namespace {

// Launches kernel(out, barrier) 4 times on one block of `threads` threads (each launch under its
// own seed) and counts the launches whose out[t] differs from want(t) somewhere.
template <typename Want>
int wrong_launches(void (*kernel)(int*, bool), int threads, bool barrier, Want want) {
  std::vector<int> out(threads);
  int wrong = 0;
  for (int i = 0; i < 4; ++i) {
    MLR_LAUNCH((1, threads, 0, nullptr), kernel)(out.data(), barrier);
    for (int t = 0; t < threads; ++t)
      if (out[t] != want(t)) {
        ++wrong;
        break;
      }
  }
  return wrong;
}

// ---- broken kernels and their repaired versions ----

// Thread i writes slot i of shared memory and reads slot n - 1 - i (written by another warp).
__global__ void exchange_across_warps(int* out, bool barrier) {
  MLR_SHARED(int, slots, [64]);
  const int i = int(threadIdx.x);
  slots[i] = i;
  if (barrier) __syncthreads();
  out[i] = slots[63 - i];
}

// The same exchange with a warp collective between write and read instead of __syncthreads: the
// shuffle orders nothing between warps.
__global__ void exchange_behind_shuffle(int* out, bool barrier) {
  MLR_SHARED(int, slots, [64]);
  const int i = int(threadIdx.x);
  slots[i] = i;
  int v = __shfl_xor_sync(0xffffffffu, i, 1);
  if (barrier) __syncthreads();
  out[i] = slots[63 - i] + (v ^ 1) - i;
}

// Lanes of one warp exchange through shared memory: needs __syncwarp.
__global__ void exchange_within_warp(int* out, bool barrier) {
  MLR_SHARED(int, slots, [32]);
  const int lane = int(threadIdx.x);
  slots[lane] = lane * 3;
  if (barrier) __syncwarp();
  out[lane] = slots[lane ^ 1];
}

// Block 1 reads what block 0 writes to global memory, with nothing ordering the two blocks.
__global__ void read_other_block(int* data, int* seen) {
  if (blockIdx.x == 0) data[threadIdx.x] = 7;
  else seen[threadIdx.x] = data[threadIdx.x];
}

__global__ void write_dynamic(int offset) {
  MLR_DYNAMIC_SMEM(bytes);
  reinterpret_cast<int*>(bytes)[offset] = 1;
}

__global__ void write_static(int index) {
  MLR_SHARED(float, table, [32]);
  table[index] = 1.f;
}

__global__ void noop_kernel(int* out) { out[threadIdx.x] = 1; }

}  // namespace

TEST_CASE("emulated device: a missing __syncthreads shows (poisoned shared memory read too early)") {
  auto want = [](int t) { return 63 - t; };
  CHECK(wrong_launches(exchange_across_warps, 64, false, want) > 0);
  CHECK(wrong_launches(exchange_across_warps, 64, true, want) == 0);
}

TEST_CASE("emulated device: a warp collective synchronises its warp only") {
  auto want = [](int t) { return 63 - t; };
  CHECK(wrong_launches(exchange_behind_shuffle, 64, false, want) > 0);
  CHECK(wrong_launches(exchange_behind_shuffle, 64, true, want) == 0);
}

TEST_CASE("emulated device: a missing __syncwarp shows") {
  auto want = [](int t) { return (t ^ 1) * 3; };
  CHECK(wrong_launches(exchange_within_warp, 32, false, want) > 0);
  CHECK(wrong_launches(exchange_within_warp, 32, true, want) == 0);
}

TEST_CASE("emulated device: a race between blocks on global memory shows") {
  // Two resident blocks run in a random order: in some launches block 1 reads before block 0 wrote.
  std::vector<int> data(32), seen(32);
  int early = 0, late = 0;
  for (int i = 0; i < 16; ++i) {
    std::fill(data.begin(), data.end(), 0);
    MLR_LAUNCH((2, 32, 0, nullptr), read_other_block)(data.data(), seen.data());
    (seen[0] == 7 ? late : early) += 1;
  }
  CHECK(early > 0);
  CHECK(late > 0);
}

TEST_CASE("emulated device: shared-memory writes out of bounds fail the launch") {
  // Dynamic shared memory of 256 bytes: int 63 is the last in bounds.
  CHECK_NOTHROW(MLR_LAUNCH((1, 32, 256, nullptr), write_dynamic)(63));
  CHECK_THROWS_WITH_AS(MLR_LAUNCH((1, 32, 256, nullptr), write_dynamic)(64),
                       doctest::Contains("outside shared memory"), std::runtime_error);
  CHECK_THROWS_WITH_AS(MLR_LAUNCH((1, 32, 256, nullptr), write_dynamic)(-1),
                       doctest::Contains("outside shared memory"), std::runtime_error);
  CHECK_NOTHROW(MLR_LAUNCH((2, 32, 0, nullptr), write_static)(31));
  CHECK_THROWS_WITH_AS(MLR_LAUNCH((2, 32, 0, nullptr), write_static)(32), doctest::Contains("static shared memory"),
                       std::runtime_error);
}

TEST_CASE("emulated device: launches the device refuses fail and surface through cudaGetLastError") {
  std::vector<int> out(1024, 0);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  struct Refused {
    const char* what;
    dim3 grid, block;
    size_t smem;
    cudaError_t code;
  };
  const Refused refused[] = {{"2048 threads", dim3(1), dim3(2048), 0, cudaErrorInvalidConfiguration},
                             {"block.z 65", dim3(1), dim3(1, 1, 65), 0, cudaErrorInvalidConfiguration},
                             {"grid.y 65536", dim3(1, 65536), dim3(32), 0, cudaErrorInvalidConfiguration},
                             {"64 KiB without the opt-in", dim3(1), dim3(32), 64 * 1024, cudaErrorInvalidValue},
                             {"300 KB", dim3(1), dim3(32), 300000, cudaErrorInvalidValue}};
  for (const Refused& r : refused) {
    INFO(r.what);
    MLR_LAUNCH((r.grid, r.block, r.smem, nullptr), noop_kernel)(out.data());
    CHECK(out[0] == 0);  // nothing ran
    const cudaError_t e = cudaGetLastError();
    CHECK(e == r.code);
    CHECK(std::string(cudaGetErrorString(e)).find("launch refused") != std::string::npos);
    CHECK(cudaGetLastError() == cudaSuccess);  // read once, then cleared
  }
  // MLR_CUDA_CHECK_LAUNCH turns a refused launch into an mlr::Error naming the cause.
  MLR_LAUNCH((dim3(1), dim3(2048), 0, nullptr), noop_kernel)(out.data());
  CHECK_ERROR_CONTAINS([] { MLR_CUDA_CHECK_LAUNCH(); }(), "1024 threads");
  // The opt-in attribute allows what the architecture allows, no more.
  REQUIRE(cudaFuncSetAttribute(reinterpret_cast<const void*>(noop_kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                               100 * 1024) == cudaSuccess);
  MLR_LAUNCH((1, 32, 100 * 1024, nullptr), noop_kernel)(out.data());
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(out[0] == 1);
  emu::set_device_arch(0, 86);
  CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(noop_kernel), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             100 * 1024) == cudaErrorInvalidValue);
  out[0] = 0;
  MLR_LAUNCH((1, 32, 100 * 1024, nullptr), noop_kernel)(out.data());  // above sm_86's 99 KB
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(out[0] == 0);
  emu::set_device_arch(0, 90);
}

TEST_CASE("flash attention on each architecture's shared memory equals the reference kernel") {
  // Forward and backward at head dims 64 and 128 on devices with 163 KB (sm_80), 99 KB (sm_86, and
  // sm_89/sm_120, which have the same limit) and 227 KB (sm_90, and sm_100) per block; at 99 KB
  // the dQ kernel at head dim 128 takes 32-key tiles. Each launch is checked against the device's
  // limits by the emulated runtime, so a configuration that does not fit fails here.
  struct Reset {
    ~Reset() {
      emu::set_device_arch(0, 90);
      cuda::set_attention_kernel(cuda::AttentionKernel::automatic);
    }
  } reset;
  Generator gen(9090);
  for (int sm : {80, 86, 90}) {
    emu::set_device_arch(0, sm);
    for (int64_t dim : {64, 128}) {
      const int64_t batch = 1, seq = 70, heads = 2, kv_heads = 1;
      auto input = [&](int64_t h) { return add(mul(rand({batch, seq, h, dim}, gen), 4.0), -2.0).to(DType::bf16).cuda(); };
      Tensor q = input(heads), k = input(kv_heads), v = input(kv_heads), dout = input(heads);
      const double scale = 1.0 / std::sqrt(double(dim));
      CHECK_MESSAGE(cuda::flash_attention_supports(q, k, v), "sm_" << sm << " D=" << dim << ": "
                                                                     << cuda::flash_attention_unsupported_reason(q, k, v));
      auto run = [&] {
        AttentionOutput f = attention_forward(q, k, v, scale, Tensor());
        AttentionGrads g = attention_backward(dout, q, k, v, f.out, f.lse, scale, Tensor());
        return std::vector<Tensor>{f.out, f.lse, g.dq, g.dk, g.dv};
      };
      cuda::set_attention_kernel(cuda::AttentionKernel::reference);
      const std::vector<Tensor> want = run();
      cuda::set_attention_kernel(cuda::AttentionKernel::flash);
      const std::vector<Tensor> got = run();
      REQUIRE(cudaGetLastError() == cudaSuccess);
      const char* names[] = {"out", "lse", "dq", "dk", "dv"};
      for (size_t i = 0; i < want.size(); ++i) {
        const auto a = want[i].cpu().to(DType::f64).to_vector<double>();
        const auto b = got[i].cpu().to(DType::f64).to_vector<double>();
        double worst = 0, largest = 1e-30;
        for (size_t j = 0; j < a.size(); ++j) {
          largest = std::max(largest, std::abs(a[j]));
          worst = std::isnan(b[j]) ? INFINITY : std::max(worst, std::abs(a[j] - b[j]));
        }
        CHECK_MESSAGE(worst / largest <= 2e-2, "sm_" << sm << " D=" << dim << " " << names[i] << ": " << worst / largest);
      }
    }
  }
  CHECK(cuda::flash::key_tile_for(cuda::flash::Kernel::dq, 128, 101376) == 32);
  CHECK(cuda::flash::key_tile_for(cuda::flash::Kernel::dq, 128, 232448) == 64);
}

TEST_CASE("flash attention: what it does not take is named, and a device with too little shared memory is refused") {
  struct Reset {
    ~Reset() { emu::set_device_arch(0, 90); }
  } reset;
  Tensor f32 = zeros({1, 8, 2, 64}).cuda(), d96 = zeros({1, 8, 2, 96}, {DType::bf16}).cuda();
  Tensor ok = zeros({1, 8, 2, 128}, {DType::bf16}).cuda();
  CHECK(cuda::flash_attention_unsupported_reason(f32, f32, f32).find("dtype f32") == 0);
  CHECK(cuda::flash_attention_unsupported_reason(d96, d96, d96).find("head dim 96") == 0);
  CHECK(cuda::flash_attention_unsupported_reason(ok, ok, ok).empty());
  emu::devices().properties[0].smem_optin = 60000;
  CHECK(cuda::flash_attention_unsupported_reason(ok, ok, ok).find("60000 B of shared memory") != std::string::npos);
  CHECK_FALSE(cuda::flash_attention_supports(ok, ok, ok));
  // The automatic choice falls back to the reference kernel (with a warning) and still computes.
  AttentionOutput f = attention_forward(ok, ok, ok, 0.125, Tensor());
  CHECK(f.out.cpu().to(DType::f32).to_vector<float>()[0] == 0.f);
}

TEST_CASE("attention falling back from the flash kernel warns once per reason") {
  // stderr goes to a file while attention runs with an unsupported head dim, three times.
  Tensor q = zeros({1, 8, 2, 96}, {DType::bf16}).cuda();
  const std::string path =
      (std::filesystem::temp_directory_path() / fmt::format("mlr_fallback_warning_{}.txt", getpid())).string();
  std::fflush(stderr);
  const int saved = dup(2);
  FILE* file = std::fopen(path.c_str(), "w+");
  REQUIRE(file != nullptr);
  dup2(fileno(file), 2);
  for (int i = 0; i < 3; ++i) attention_forward(q, q, q, 0.125, Tensor());
  std::fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::fclose(file);
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::remove(path.c_str());
  INFO("stderr: ", text);
  size_t warnings = 0;
  for (size_t at = text.find("head dim 96"); at != std::string::npos; at = text.find("head dim 96", at + 1)) ++warnings;
  CHECK(warnings == 1);
  CHECK(text.find("slow reference kernel") != std::string::npos);
}

TEST_CASE("emulated device: copies between two GPUs are ordered after the source's work, which waits for them") {
  struct Reset {
    ~Reset() { emu::devices().count = 1; }
  } reset;
  emu::devices().count = 2;
  emu::stream_hazards().clear();
  {
    Tensor a = arange(0.0, 1000.0, 1.0, {DType::f32}).cuda(0);
    Tensor b = mul(a, 2.0);  // work on device 0's stream that writes the copy's source
    Tensor c = b.to(Device::cuda(1));
    CHECK(c.device() == Device::cuda(1));
    CHECK(c.cpu().to_vector<float>()[999] == 1998.f);
  }  // b is freed on device 0's stream, after the copy on device 1's stream
  CHECK_MESSAGE(emu::stream_hazards().empty(),
                (emu::stream_hazards().empty() ? std::string() : emu::stream_hazards().front()));

  // The emulator's checks themselves: a copy queued on device 1 without waiting for device 0, then
  // the source freed on device 0 without waiting for the copy, are both reported.
  void *src = nullptr, *dst = nullptr;
  cudaStream_t s0, s1;
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&s0, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaMallocAsync(&src, 64, s0) == cudaSuccess);
  REQUIRE(cudaMemsetAsync(src, 1, 64, s0) == cudaSuccess);
  REQUIRE(cudaSetDevice(1) == cudaSuccess);
  REQUIRE(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking) == cudaSuccess);
  REQUIRE(cudaMallocAsync(&dst, 64, s1) == cudaSuccess);
  REQUIRE(cudaMemcpyAsync(dst, src, 64, cudaMemcpyDefault, s1) == cudaSuccess);
  const size_t unordered = emu::stream_hazards().size();  // one per stream of device 0 with work queued
  REQUIRE(unordered >= 1);
  CHECK(emu::stream_hazards()[0].find("without waiting") != std::string::npos);
  REQUIRE(cudaSetDevice(0) == cudaSuccess);
  REQUIRE(cudaFreeAsync(src, s0) == cudaSuccess);
  REQUIRE(emu::stream_hazards().size() == unordered + 1);
  CHECK(emu::stream_hazards().back().find("may still read") != std::string::npos);
  REQUIRE(cudaFreeAsync(dst, s1) == cudaSuccess);
  emu::stream_hazards().clear();
}

#endif  // MLR_CUDA_EMULATION

// The hardware limits of every GPU architecture we build for, and the launch shapes of the kernels
// whose resources come near them. One table, read by three users: the runtime (which tile
// configuration of a kernel fits the device it runs on), the emulated device (which refuses
// launches the real one would refuse), and the CI check of ptxas's resource usage
// (tests/tensor/cuda_resources/), which fails the build's tests when a kernel compiled for an
// architecture cannot be launched on a device of it.
// Plain C++ (no CUDA types), so host-only programs include it.
//
// Figures from the CUDA C++ Programming Guide, "Technical Specifications per Compute Capability":
// shared memory per block with opt-in (cudaDevAttrMaxSharedMemoryPerBlockOptin), 32-bit registers
// per SM and per block (64 K on all of these), at most 255 registers per thread, threads per SM.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>

namespace mlr::cuda {

struct ArchLimits {
  int sm;                      // compute capability * 10 + minor (86 = 8.6)
  const char* examples;        // GPUs of this architecture
  size_t smem_per_block_optin; // bytes a block may use with cudaFuncAttributeMaxDynamicSharedMemorySize
  int registers_per_sm;
  int registers_per_block;
  int registers_per_thread;
  int threads_per_sm;
};

constexpr size_t kDefaultDynamicSmem = 48 * 1024;  // without the opt-in attribute
constexpr int kMaxThreadsPerBlock = 1024;

inline constexpr ArchLimits kArchLimits[] = {
    {80, "A100, A30", 166912, 65536, 65536, 255, 2048},
    {86, "RTX 3090, A10, A40, A6000", 101376, 65536, 65536, 255, 1536},
    {89, "RTX 4090, L4, L40S", 101376, 65536, 65536, 255, 1536},
    {90, "H100, H200", 232448, 65536, 65536, 255, 2048},
    {100, "B200, GB200", 232448, 65536, 65536, 255, 2048},
    {120, "RTX 5090, RTX PRO 6000", 101376, 65536, 65536, 255, 1536},
};

// The limits of architecture `sm`, or nothing for one outside the table.
constexpr std::optional<ArchLimits> arch_limits(int sm) {
  for (const ArchLimits& a : kArchLimits)
    if (a.sm == sm) return a;
  return std::nullopt;
}

// Threads per block of the kernels launched with more than kTypicalBlock (the CI check of ptxas's
// resource usage multiplies them by each kernel's registers); every other kernel uses at most
// kTypicalBlock, the flash kernels flash::kThreads.
constexpr int kTypicalBlock = 256;
struct BlockSize {
  const char* kernel;  // a part of the demangled name
  int threads;
};
inline constexpr BlockSize kBlockSizes[] = {
    {"total_kernel", 1024},       // optim/kernels/cuda/sum_of_squares_multi.cu
    {"adamw_multi_kernel", 512},  // optim/kernels/cuda/adamw_multi.cu
};

// Binary compatibility: code compiled for sm_XY (a cubin) runs on devices of the same major
// version and minor >= Y. So a kernel built for sm_80 must also fit sm_86 and sm_89.
constexpr bool cubin_runs_on(int cubin_sm, int device_sm) {
  return cubin_sm / 10 == device_sm / 10 && device_sm % 10 >= cubin_sm % 10;
}

// ---- flash attention (attention_flash.cuh) ----
// A CTA of 4 warps owns 64 query rows (forward, dQ) or 64 key rows (dK/dV). Tiles are padded by 8
// elements per row (bank-conflict-free fragment loads). Inner tiles are double-buffered with
// cp.async. The key tile of forward and dQ is a configuration: 64 keys where shared memory allows
// (fewer passes over the softmax state), 32 on devices with 99 KB per block (sm_86/89/120), where
// dQ at head dim 128 with 64-key tiles needs 104,448 B.
namespace flash {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kTileRows = 16 * kWarps;
constexpr int kQueryTile = 32;                 // queries per inner step of dK/dV
constexpr int kKeyTiles[] = {64, 32};          // forward and dQ key tiles, preferred first
constexpr size_t kElementBytes = 2;            // bf16 or f16

constexpr int stride(int dim) { return dim + 8; }

// Dynamic shared memory of each kernel: Q tile + 2 K and 2 V buffers (forward); Q and dO tiles + 2 K
// and 2 V buffers (dQ); K and V tiles + 2 Q and 2 dO buffers + 2 x 2 rows of per-query statistics
// (dK/dV).
constexpr size_t forward_smem(int dim, int key_tile) {
  return size_t(kTileRows + 4 * key_tile) * stride(dim) * kElementBytes;
}
constexpr size_t dq_smem(int dim, int key_tile) {
  return size_t(2 * kTileRows + 4 * key_tile) * stride(dim) * kElementBytes;
}
constexpr size_t dkv_smem(int dim) {
  return size_t(2 * kTileRows + 4 * kQueryTile) * stride(dim) * kElementBytes + 4 * kQueryTile * sizeof(float);
}

enum class Kernel { forward, dq, dkv };

// The key tile the runtime launches `kernel` with at head dim `dim` on a device allowing `limit`
// bytes of shared memory per block (the first of kKeyTiles that fits; dK/dV has one shape and
// answers kQueryTile), or 0 when none fits.
constexpr int key_tile_for(Kernel kernel, int dim, size_t limit) {
  if (kernel == Kernel::dkv) return dkv_smem(dim) <= limit ? kQueryTile : 0;
  for (int kt : kKeyTiles) {
    const size_t bytes = kernel == Kernel::forward ? forward_smem(dim, kt) : dq_smem(dim, kt);
    if (bytes <= limit) return kt;
  }
  return 0;
}

constexpr size_t smem_of(Kernel kernel, int dim, int key_tile) {
  return kernel == Kernel::forward ? forward_smem(dim, key_tile)
         : kernel == Kernel::dq    ? dq_smem(dim, key_tile)
                                   : dkv_smem(dim);
}

// Every architecture of the table runs forward and backward at both head dims.
constexpr bool fits_every_arch() {
  for (const ArchLimits& a : kArchLimits)
    for (int dim : {64, 128})
      for (Kernel k : {Kernel::forward, Kernel::dq, Kernel::dkv})
        if (key_tile_for(k, dim, a.smem_per_block_optin) == 0) return false;
  return true;
}
static_assert(fits_every_arch(), "a flash attention kernel has no tile configuration for some architecture");

}  // namespace flash

}  // namespace mlr::cuda

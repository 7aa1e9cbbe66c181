// Runs CUDA kernels on the CPU, so the tensor-core kernels are tested in CI, where there is no GPU.
// It serves kernels written against a small set of device primitives: threadIdx/blockIdx/blockDim/
// gridDim, __syncthreads, __shfl_xor_sync, mma.sync.m16n8k16 and cp.async (the kernel header calls
// the emulated versions when MLR_CUDA_EMULATION is defined, see attention_flash.cuh).
//
// Each CUDA thread of a block is a fiber (ucontext). The block runs in rounds: a round resumes every
// live thread until its next barrier, either __syncthreads or a warp collective (shuffle, mma), so
// every thread of a warp reaches a collective before any leaves it, as in hardware. Collectives
// exchange their operands through two alternating buffers per warp, which one barrier per
// collective makes safe. A round in which the threads of a block (for __syncthreads) or of a warp
// (for a collective) wait at different points is divergence that a GPU would hang or misbehave on:
// the launch fails with a message.
//
// mma.sync.m16n8k16 (bf16 or f16 in, f32 accumulate) is computed from the operand fragments laid
// out as the PTX ISA specifies them (g = lane / 4, t = lane % 4):
//   A (16 x 16): register r of lane (g, t) holds A[g + 8 (r & 1)][2t + 8 (r >> 1) + {0, 1}]
//   B (16 x 8):  register r holds B[2t + 8 r + {0, 1}][g]
//   C (16 x 8):  element e holds C[g + 8 (e >> 1)][2t + (e & 1)]
// Shared memory is filled with 0xFF bytes (NaN in bf16, f16 and f32) before each block, so a tile
// read before it is written shows up in the results; cp.async copies at once.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#define MLR_CUDA_EMULATION 1

namespace mlr::cuda_emulation {

enum class Wait { none, block, warp };

struct Thread {
  ucontext_t context;
  uint3 index;
  bool done = false;
  Wait wait = Wait::none;
  uint64_t collectives = 0;  // warp collectives passed so far
};

struct Slot {
  uint32_t a[4];
  uint32_t b[2];
  uint64_t value;
};

struct State {
  dim3 grid, block;
  uint3 block_index;
  std::vector<Thread> threads;
  std::vector<std::vector<unsigned char>> stacks;
  ucontext_t scheduler;
  int current = 0;
  std::vector<uint64_t> shared;  // dynamic shared memory, 8-byte words (16-byte aligned by the allocator)
  std::vector<std::array<std::array<Slot, 32>, 2>> exchange;  // per warp, two buffers of 32 lanes
  std::function<void()> body;
};

inline State& state() {
  static State s;
  return s;
}

inline Thread& self() { return state().threads[state().current]; }

inline void wait_at(Wait kind) {
  State& s = state();
  Thread& t = s.threads[s.current];
  t.wait = kind;
  swapcontext(&t.context, &s.scheduler);
  t.wait = Wait::none;
}

// The exchange buffer of this thread's next warp collective.
inline std::array<Slot, 32>& next_exchange() {
  State& s = state();
  Thread& t = s.threads[s.current];
  return s.exchange[s.current / 32][t.collectives++ % 2];
}

inline unsigned char* dynamic_shared_memory() { return reinterpret_cast<unsigned char*>(state().shared.data()); }

inline void copy16(void* shared, const void* global, bool valid) {
  if (valid) std::memcpy(shared, global, 16);
  else std::memset(shared, 0, 16);
}

template <typename T>
float half_value(uint32_t reg, int half) {
  const uint16_t bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xFFFFu);
  T v;
  std::memcpy(&v, &bits, 2);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return __half2float(v);
}

template <typename T>
void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  const int lane = state().current % 32;
  std::array<Slot, 32>& x = next_exchange();
  std::memcpy(x[lane].a, a, sizeof(x[lane].a));
  x[lane].b[0] = b0;
  x[lane].b[1] = b1;
  wait_at(Wait::warp);
  const int g = lane / 4, t = lane % 4;
  for (int e = 0; e < 4; ++e) {
    const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
    float acc = d[e];
    for (int k = 0; k < 16; ++k) {
      const Slot& a_owner = x[(row % 8) * 4 + (k % 8) / 2];
      const Slot& b_owner = x[col * 4 + (k % 8) / 2];
      const float av = half_value<T>(a_owner.a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k & 1);
      const float bv = half_value<T>(b_owner.b[k >= 8 ? 1 : 0], k & 1);
      acc += av * bv;
    }
    d[e] = acc;
  }
}

template <typename V>
V shuffle_xor(V v, int lane_mask) {
  static_assert(sizeof(V) <= 8, "shuffle of a value wider than 8 bytes");
  const int lane = state().current % 32;
  std::array<Slot, 32>& x = next_exchange();
  std::memcpy(&x[lane].value, &v, sizeof(V));
  wait_at(Wait::warp);
  V r;
  std::memcpy(&r, &x[(lane ^ lane_mask) % 32].value, sizeof(V));
  return r;
}

inline void thread_entry() {
  State& s = state();
  s.body();
  s.threads[s.current].done = true;  // returning resumes the scheduler (uc_link)
}

// After a round: every live thread waits, and the waits agree per block (__syncthreads) and per
// warp (collectives, by count).
inline void check_round(const State& s) {
  const int n = static_cast<int>(s.threads.size());
  bool any_block = false, any_done = false;
  for (const Thread& t : s.threads) {
    any_block |= !t.done && t.wait == Wait::block;
    any_done |= t.done;
  }
  for (int i = 0; i < n; ++i) {
    const Thread& t = s.threads[i];
    if (any_block && (t.done || t.wait != Wait::block))
      throw std::runtime_error("cuda emulator: thread " + std::to_string(i) +
                               (t.done ? " exited" : " waits at a warp collective") +
                               " while others wait at __syncthreads (divergent barrier)");
    const Thread& leader = s.threads[i - i % 32];
    if (t.done != leader.done || (!t.done && (t.wait != leader.wait || t.collectives != leader.collectives)))
      throw std::runtime_error("cuda emulator: lanes " + std::to_string(i - i % 32) + " and " + std::to_string(i) +
                               " of a warp diverge at a collective");
  }
  (void)any_done;
}

// Runs kernel() as every thread of every block of `grid` (blocks one after another).
inline void launch(dim3 grid, dim3 block, size_t shared_bytes, std::function<void()> kernel) {
  State& s = state();
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads % 32 != 0) throw std::runtime_error("cuda emulator: block size must be a multiple of 32");
  constexpr size_t kStack = 256 * 1024;
  s.grid = grid;
  s.block = block;
  s.body = std::move(kernel);
  s.threads.assign(threads, Thread{});
  s.stacks.resize(threads);
  for (auto& stack : s.stacks) stack.resize(kStack);
  s.exchange.assign(threads / 32, {});
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        s.block_index = uint3{bx, by, bz};
        s.shared.assign((shared_bytes + 7) / 8, ~uint64_t(0));
        for (int i = 0; i < threads; ++i) {
          Thread& t = s.threads[i];
          t = Thread{};
          t.index = uint3{unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y)};
          getcontext(&t.context);
          t.context.uc_stack.ss_sp = s.stacks[i].data();
          t.context.uc_stack.ss_size = kStack;
          t.context.uc_link = &s.scheduler;
          makecontext(&t.context, thread_entry, 0);
        }
        for (;;) {
          bool live = false;
          for (int i = 0; i < threads; ++i) {
            if (s.threads[i].done) continue;
            live = true;
            s.current = i;
            swapcontext(&s.scheduler, &s.threads[i].context);
          }
          if (!live) break;
          check_round(s);
        }
      }
}

}  // namespace mlr::cuda_emulation

// The CUDA built-ins, for kernel source compiled by the host compiler.
#define threadIdx (::mlr::cuda_emulation::self().index)
#define blockIdx (::mlr::cuda_emulation::state().block_index)
#define blockDim (::mlr::cuda_emulation::state().block)
#define gridDim (::mlr::cuda_emulation::state().grid)
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

inline void __syncthreads() { ::mlr::cuda_emulation::wait_at(::mlr::cuda_emulation::Wait::block); }

template <typename V>
V __shfl_xor_sync(unsigned /*mask*/, V v, int lane_mask, int /*width*/ = 32) {
  return ::mlr::cuda_emulation::shuffle_xor(v, lane_mask);
}

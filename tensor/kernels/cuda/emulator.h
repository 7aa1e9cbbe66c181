// Runs CUDA kernels on the CPU, so every kernel of the CUDA backend is tested in CI, where there is
// no GPU. Two uses: the emulated CUDA build (cmake -DMLR_CUDA_EMULATION=ON) compiles every .cu file
// as C++ with this header included first, with a CUDA runtime that keeps "device" memory on the
// host (emulated_cudart.cpp), so the GPU test suites run unchanged on the CPU; and single tests
// include a kernel header directly (tests/tensor/flash_attention_emulated_test.cpp).
// It serves kernels written against a small set of device primitives: threadIdx/blockIdx/blockDim/
// gridDim, __syncthreads, __shfl_xor_sync, mma.sync.m16n8k16, cp.async and the IEEE intrinsics
// (kernels call the emulated mma and cp.async when MLR_CUDA_EMULATION is defined); launches go
// through MLR_LAUNCH (cuda_utils.cuh).
//
// Each CUDA thread of a block is a fiber with its own stack. The block runs in rounds: a round resumes every
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
// Dynamic shared memory is filled with 0xFF bytes (NaN in bf16, f16 and f32) before each block, so
// a tile read before it is written shows up in the results; cp.async lands only at the
// cp.async.wait_group that covers it; rounds alternate ascending and descending thread order, so a
// missing barrier between a write and another thread's read is met in one of the two orders.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#define MLR_CUDA_EMULATION 1

namespace mlr::cuda_emulation {

// ---- fibers: a stack per emulated thread and a switch between stacks ----
#if defined(__x86_64__)
// x86-64: the switch pushes the callee-saved registers on the current stack, stores the stack
// pointer in *save, and continues on `load`, a stack left the same way (or a fresh one prepared by
// fiber_init to "return" into its entry function). No signal-mask system calls, unlike
// swapcontext: the emulated suites spend their time in the kernels instead of in the kernel.
// Weak, so that every file including this header may carry the definition.
extern "C" void mlr_emulator_switch(void** save, void* load);
asm(R"(
  .pushsection .text
  .weak mlr_emulator_switch
  .type mlr_emulator_switch, @function
mlr_emulator_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mlr_emulator_switch, .-mlr_emulator_switch
  .popsection
)");

struct FiberContext {
  void* sp = nullptr;
};

// A fresh stack whose first switch enters `entry` (which must never return) with the stack
// aligned as after a call.
inline void fiber_init(FiberContext& c, unsigned char* stack, size_t size, void (*entry)()) {
  const uintptr_t top = (reinterpret_cast<uintptr_t>(stack) + size) & ~uintptr_t(15);
  void** return_slot = reinterpret_cast<void**>(top - 16);
  *return_slot = reinterpret_cast<void*>(entry);
  void** sp = return_slot - 6;  // r15, r14, r13, r12, rbx, rbp
  for (int i = 0; i < 6; ++i) sp[i] = nullptr;
  c.sp = sp;
}
inline void fiber_switch(FiberContext& from, FiberContext& to) { mlr_emulator_switch(&from.sp, to.sp); }
#else
struct FiberContext {
  ucontext_t context;
};
inline void fiber_init(FiberContext& c, unsigned char* stack, size_t size, void (*entry)()) {
  getcontext(&c.context);
  c.context.uc_stack.ss_sp = stack;
  c.context.uc_stack.ss_size = size;
  c.context.uc_link = nullptr;
  makecontext(&c.context, entry, 0);
}
inline void fiber_switch(FiberContext& from, FiberContext& to) { swapcontext(&from.context, &to.context); }
#endif

enum class Wait { none, block, warp };

struct AsyncCopy {
  unsigned char* shared;
  unsigned char bytes[16];
};

struct Thread {
  FiberContext context;
  std::vector<AsyncCopy> uncommitted;         // cp.async issued since the last commit
  std::deque<std::vector<AsyncCopy>> committed;  // committed groups, oldest first
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
  uint64_t block_linear = 0;
  uint64_t round = 0;
  std::vector<Thread> threads;
  std::vector<std::unique_ptr<unsigned char[]>> stacks;  // one per thread, reused across launches
  FiberContext scheduler;
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
  fiber_switch(t.context, s.scheduler);
  t.wait = Wait::none;
}

// The exchange buffer of this thread's next warp collective.
inline std::array<Slot, 32>& next_exchange() {
  State& s = state();
  Thread& t = s.threads[s.current];
  return s.exchange[s.current / 32][t.collectives++ % 2];
}

inline unsigned char* dynamic_shared_memory() { return reinterpret_cast<unsigned char*>(state().shared.data()); }

// cp.async: the source is read when the copy is issued, the shared destination written only when
// a cp.async.wait_group covers its group, so a kernel that reads a tile before waiting sees the
// old contents (NaN poison at first).
inline void copy16(void* shared, const void* global, bool valid) {
  Thread& t = self();
  AsyncCopy c{static_cast<unsigned char*>(shared), {}};
  if (valid) std::memcpy(c.bytes, global, 16);
  else std::memset(c.bytes, 0, 16);
  t.uncommitted.push_back(c);
}
inline void async_commit() {
  Thread& t = self();
  t.committed.push_back(std::move(t.uncommitted));
  t.uncommitted.clear();
}
// Completes every committed group but the newest n (uncommitted copies stay pending).
inline void async_wait(int n) {
  Thread& t = self();
  while (static_cast<int>(t.committed.size()) > n) {
    for (const AsyncCopy& c : t.committed.front()) std::memcpy(c.shared, c.bytes, 16);
    t.committed.pop_front();
  }
}

template <typename T>
float half_value(uint32_t reg, int half) {
  const uint16_t bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xFFFFu);
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(__ushort_as_bfloat16(bits));
  else return __half2float(__ushort_as_half(bits));
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

[[noreturn]] inline void thread_entry() {
  State& s = state();
  s.body();
  Thread& t = s.threads[s.current];
  t.done = true;
  fiber_switch(t.context, s.scheduler);  // never resumed
  std::abort();
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
  static std::mutex serial;  // one emulated device: launches from several host threads take turns
  std::lock_guard<std::mutex> lock(serial);
  State& s = state();
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads % 32 != 0) throw std::runtime_error("cuda emulator: block size must be a multiple of 32");
  constexpr size_t kStack = 64 * 1024;
  s.grid = grid;
  s.block = block;
  s.body = std::move(kernel);
  s.threads.assign(threads, Thread{});
  while (s.stacks.size() < size_t(threads)) s.stacks.emplace_back(new unsigned char[kStack]);  // not zeroed
  s.exchange.assign(threads / 32, {});
  // (The block index lives in the state: with swapcontext, which returns like setjmp, that keeps
  // -Wclobbered quiet.)
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  for (s.block_linear = 0; s.block_linear < blocks; ++s.block_linear) {
    const uint64_t b = s.block_linear;
    s.block_index = uint3{unsigned(b % grid.x), unsigned(b / grid.x % grid.y), unsigned(b / (uint64_t(grid.x) * grid.y))};
    s.shared.assign((shared_bytes + 7) / 8, ~uint64_t(0));
    for (int i = 0; i < threads; ++i) {
      Thread& t = s.threads[i];
      t = Thread{};
      t.index = uint3{unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y)};
      fiber_init(t.context, s.stacks[i].get(), kStack, thread_entry);
    }
    // Rounds alternate between ascending and descending thread order, so that a read of shared
    // memory that a missing barrier leaves racing with a write of another thread meets the
    // unwritten value in one of the two orders.
    for (s.round = 0;; ++s.round) {
      bool live = false;
      for (int j = 0; j < threads; ++j) {
        const int i = s.round % 2 == 0 ? j : threads - 1 - j;
        if (s.threads[i].done) continue;
        live = true;
        s.current = i;
        fiber_switch(s.scheduler, s.threads[i].context);
      }
      if (!live) break;
      check_round(s);
    }
  }
}

// MLR_LAUNCH(cfg, kernel)(args...) in the emulated build: runs the whole grid before returning, as
// if every launch were followed by a device synchronisation. Launches are serialised (one
// emulated device).
template <typename... Params>
auto launcher(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes = 0,
              cudaStream_t /*stream*/ = nullptr) {
  return [=](auto&&... args) {
    std::tuple<Params...> params(args...);
    launch(grid, block, shared_bytes, [&] { std::apply(kernel, params); });
  };
}

}  // namespace mlr::cuda_emulation

// The CUDA built-ins, for kernel source compiled by the host compiler.
#define threadIdx (::mlr::cuda_emulation::self().index)
#define blockIdx (::mlr::cuda_emulation::state().block_index)
#define blockDim (::mlr::cuda_emulation::state().block)
#define gridDim (::mlr::cuda_emulation::state().grid)
// Static shared memory: one object per kernel instantiation, shared by every thread (blocks run one
// after another, so one copy serves all).
#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

inline void __syncthreads() { ::mlr::cuda_emulation::wait_at(::mlr::cuda_emulation::Wait::block); }

template <typename V>
V __shfl_xor_sync(unsigned /*mask*/, V v, int lane_mask, int /*width*/ = 32) {
  return ::mlr::cuda_emulation::shuffle_xor(v, lane_mask);
}

// IEEE intrinsics: the host's float arithmetic rounds to nearest (x86-64 without -mfma never
// contracts a * b + c into one rounding, so the explicit _rn forms keep their meaning).
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
[[noreturn]] inline void __trap() { std::abort(); }

// Device code calls the classification functions unqualified, as CUDA's math headers declare them.
using std::isfinite;
using std::isinf;
using std::isnan;

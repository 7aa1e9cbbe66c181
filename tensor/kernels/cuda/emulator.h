// Runs CUDA kernels on the CPU, so every kernel of the CUDA backend is tested in CI, where there is
// no GPU. Two uses: the emulated CUDA build (cmake -DMLR_CUDA_EMULATION=ON) compiles every .cu file
// as C++ with this header included first, with a CUDA runtime that keeps "device" memory on the
// host (emulated_cudart.cpp), so the GPU test suites run unchanged on the CPU; and single tests
// include a kernel header directly (tests/tensor/flash_attention_emulated_test.cpp).
// It serves kernels written against a small set of device primitives: threadIdx/blockIdx/blockDim/
// gridDim, __syncthreads, __syncwarp, __shfl_xor_sync, mma.sync.m16n8k16, cp.async, static shared
// memory through MLR_SHARED (cuda_utils.cuh) and the IEEE intrinsics (kernels call the emulated mma
// and cp.async when MLR_CUDA_EMULATION is defined); launches go through MLR_LAUNCH (cuda_utils.cuh).
//
// Scheduling, built to make races show. Each CUDA thread is a fiber with its own stack. Two blocks
// of the grid are resident at a time (fewer when the grid is smaller); the emulator picks one of them
// at random and runs it to its next __syncthreads (or its end), then picks again, so a race between
// blocks on global memory meets both orders. Within a block, the ready threads run one at a time in
// a random order, each to its next barrier: __syncthreads waits for the whole block, a warp
// collective (shuffle, mma, __syncwarp) only for the 32 lanes of its warp, which continue at once
// (in random order again) while the other warps have not yet reached theirs. The order comes from a
// seed: MLR_EMU_SEED (default 1) mixed with the launch's number, so a failure replays exactly and CI
// runs the suites under several seeds. Lanes of a warp that meet different collectives, or threads
// of a block that meet different barriers, are divergence that a GPU would hang or misbehave on: the
// launch fails with a message.
//
// Memory. Dynamic shared memory and the static shared objects of each block (MLR_SHARED) are filled
// with 0xFF bytes (NaN in bf16, f16 and f32) when the block starts, so a read before a write shows in
// the results, and are fenced by guard bytes checked at every barrier: a write out of bounds fails
// the launch naming the block and the offset. cp.async lands only at the cp.async.wait_group that
// covers it.
//
// Launch checks, as the real runtime makes them: a grid, block or dynamic shared-memory size that
// the emulated device (its architecture's limits in arch_limits.h; cudaFuncSetAttribute's opt-in per
// kernel) does not allow fails the launch without running it, reported by cudaGetLastError.
//
// mma.sync.m16n8k16 (bf16 or f16 in, f32 accumulate) is computed from the operand fragments laid
// out as the PTX ISA specifies them (g = lane / 4, t = lane % 4):
//   A (16 x 16): register r of lane (g, t) holds A[g + 8 (r & 1)][2t + 8 (r >> 1) + {0, 1}]
//   B (16 x 8):  register r holds B[2t + 8 r + {0, 1}][g]
//   C (16 x 8):  element e holds C[g + 8 (e >> 1)][2t + (e & 1)]
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
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "tensor/kernels/cuda/arch_limits.h"

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

// ---- the emulated devices ----

struct DeviceProperties {
  int sm = 90;                     // compute capability * 10 + minor
  size_t smem_optin = 232448;      // cudaDevAttrMaxSharedMemoryPerBlockOptin
  int sms = 2;                     // few SMs: grids capped by SM count stay small on the CPU
};

constexpr int kMaxEmulatedDevices = 8;

struct Devices {
  int count = 1;  // tests of work between devices ask for more
  std::array<DeviceProperties, kMaxEmulatedDevices> properties{};
};

inline Devices& devices() {
  static Devices d;
  return d;
}

// The current device (cudaSetDevice), per host thread as in the real runtime.
inline int& current_device() {
  static thread_local int d = 0;
  return d;
}

// Makes device `device` an emulated GPU of architecture `sm` (arch_limits.h): its compute
// capability and its shared memory per block. Tests use it to run kernels under, say, an RTX 4090's
// 99 KB.
inline void set_device_arch(int device, int sm) {
  const auto limits = mlr::cuda::arch_limits(sm);
  if (!limits || device < 0 || device >= kMaxEmulatedDevices)
    throw std::runtime_error("cuda emulator: no architecture sm_" + std::to_string(sm) + " or no device " +
                             std::to_string(device));
  devices().properties[device].sm = sm;
  devices().properties[device].smem_optin = limits->smem_per_block_optin;
}

// The error the next cudaGetLastError returns (and clears), with a message that names the cause;
// cudaGetErrorString gives the message for the code of the latest error.
struct ErrorState {
  cudaError_t pending = cudaSuccess;
  cudaError_t described = cudaSuccess;
  std::string message;
};
inline ErrorState& errors() {
  static ErrorState e;
  return e;
}
inline void set_error(cudaError_t code, std::string message) {
  ErrorState& e = errors();
  if (e.pending == cudaSuccess) e.pending = code;  // the first error stays until it is read
  e.described = code;
  e.message = std::move(message);
}

// cudaFuncAttributeMaxDynamicSharedMemorySize per kernel (address) and device; 48 KiB without it.
inline std::map<std::pair<const void*, int>, size_t>& kernel_smem_limits() {
  static std::map<std::pair<const void*, int>, size_t> m;
  return m;
}

// ---- streams and events: what orders work between devices ----
// Emulated streams run their work at once, so a missing event shows nowhere by itself. They count
// their work instead, and remember which work of other streams they have waited for (an event
// recorded there and waited on here); the emulated runtime (emulated_cudart.cpp) reports a copy
// between devices that is not ordered after the other device's queued work, and a cudaFreeAsync of
// a buffer a copy on another stream may still read, as hazards.
struct Stream {
  int device = 0;
  uint64_t work = 0;                            // operations queued so far
  std::map<const Stream*, uint64_t> waited;     // per other stream: its work this one waits for
};
struct Event {
  const Stream* stream = nullptr;
  uint64_t work = 0;
};

inline Stream* default_stream(int device) {
  static std::array<Stream, kMaxEmulatedDevices> streams = [] {
    std::array<Stream, kMaxEmulatedDevices> a{};
    for (int i = 0; i < kMaxEmulatedDevices; ++i) a[i].device = i;
    return a;
  }();
  return &streams[device];
}
inline Stream* stream_of(cudaStream_t s) {
  return s != nullptr ? reinterpret_cast<Stream*>(s) : default_stream(current_device());
}

// Ordering hazards found since the program started (each also printed to stderr).
inline std::vector<std::string>& stream_hazards() {
  static std::vector<std::string> h;
  return h;
}

// ---- random order: a seed per launch ----

inline uint64_t seed_base() {
  static const uint64_t base = [] {
    const char* v = std::getenv("MLR_EMU_SEED");
    return v != nullptr && *v != 0 ? std::strtoull(v, nullptr, 10) : uint64_t(1);
  }();
  return base;
}

// splitmix64: small, fast, and good enough to shuffle threads.
struct Random {
  uint64_t x;
  uint64_t next() {
    uint64_t z = (x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  size_t below(size_t n) { return size_t(next() % n); }
};

// ---- threads and blocks ----

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

constexpr size_t kGuard = 64;                    // guard bytes around each shared-memory region
constexpr unsigned char kGuardByte = 0xA5;
constexpr size_t kStaticSharedLimit = 48 * 1024;  // static shared memory per block, as on every GPU

// A block's shared memory: the dynamic region and the static objects (MLR_SHARED), each between
// guard bytes, poisoned with 0xFF at the block's start.
struct SharedMemory {
  std::vector<uint64_t> dynamic;  // kGuard + bytes + kGuard, 8-byte words (16-byte aligned by the allocator)
  size_t dynamic_bytes = 0;
  std::vector<uint64_t> statics;  // fixed capacity: objects never move
  size_t statics_used = 0;
  struct StaticObject {
    const void* site;  // the declaration (MLR_SHARED)
    size_t offset, bytes;
  };
  std::vector<StaticObject> sites;

  unsigned char* dynamic_base() { return reinterpret_cast<unsigned char*>(dynamic.data()); }
  unsigned char* statics_base() { return reinterpret_cast<unsigned char*>(statics.data()); }

  void reset(size_t bytes) {
    dynamic_bytes = bytes;
    dynamic.resize((2 * kGuard + bytes + 7) / 8);
    unsigned char* d = dynamic_base();
    std::memset(d, kGuardByte, kGuard);
    std::memset(d + kGuard, 0xFF, bytes);
    std::memset(d + kGuard + bytes, kGuardByte, dynamic.size() * 8 - kGuard - bytes);
    if (statics.empty()) statics.resize((kStaticSharedLimit + 64 * kGuard) / 8);
    std::memset(statics_base(), kGuardByte, statics_used);
    statics_used = 0;
    sites.clear();
  }

  // The object of declaration site `site` in this block, placed at its first use.
  void* static_object(const void* site, size_t bytes) {
    for (const StaticObject& o : sites)
      if (o.site == site) return statics_base() + o.offset;
    const size_t offset = (statics_used + kGuard + 15) / 16 * 16;
    if (offset + bytes + kGuard > statics.size() * 8)
      throw std::runtime_error("cuda emulator: a block declares more than 48 KiB of static shared memory");
    std::memset(statics_base() + statics_used, kGuardByte, offset - statics_used);
    std::memset(statics_base() + offset, 0xFF, bytes);
    std::memset(statics_base() + offset + bytes, kGuardByte, kGuard);
    statics_used = offset + bytes + kGuard;
    sites.push_back({site, offset, bytes});
    return statics_base() + offset;
  }

  // Where a guard byte was overwritten ("" when none was).
  std::string damaged_guard() {
    const unsigned char* d = dynamic_base();
    const size_t total = dynamic.size() * 8;
    for (size_t i = 0; i < total; i = i + 1 == kGuard ? kGuard + dynamic_bytes : i + 1) {
      if (d[i] != kGuardByte)
        return "dynamic shared memory (" + std::to_string(dynamic_bytes) + " bytes) at byte offset " +
               std::to_string(int64_t(i) - int64_t(kGuard));
    }
    const unsigned char* st = statics_base();
    size_t from = 0;  // objects lie in `sites` order, each between guards
    for (const StaticObject& o : sites) {
      for (size_t i = from; i < o.offset; ++i)
        if (st[i] != kGuardByte)
          return "static shared memory, " + std::to_string(o.offset - i) + " bytes before an object of " +
                 std::to_string(o.bytes) + " bytes";
      from = o.offset + o.bytes;
      for (size_t i = from; i < from + kGuard; ++i)
        if (st[i] != kGuardByte)
          return "static shared memory, byte " + std::to_string(i - o.offset) + " of an object of " +
                 std::to_string(o.bytes) + " bytes";
    }
    return {};
  }
};

struct Block {
  uint3 index{};
  uint64_t linear = 0;
  std::vector<Thread> threads;
  SharedMemory shared;
  std::vector<std::array<std::array<Slot, 32>, 2>> exchange;  // per warp, two buffers of 32 lanes
  std::vector<int> warp_arrived, warp_exited;                 // per warp: lanes at a collective, lanes done
  std::vector<int> ready;                                     // threads that may run now
  int at_barrier = 0, exited = 0;
};

struct State {
  dim3 grid, block;
  std::vector<Block> resident;
  Block* current_block = nullptr;
  int current = 0;
  std::vector<std::unique_ptr<unsigned char[]>> stacks;  // per resident block and thread, reused across launches
  FiberContext scheduler;
  std::function<void()> body;
  Random random{1};
  uint64_t launches = 0;
  uint64_t seed = 0;
};

inline State& state() {
  static State s;
  return s;
}

inline Block& current_block() { return *state().current_block; }
inline Thread& self() { return state().current_block->threads[state().current]; }

inline void wait_at(Wait kind) {
  State& s = state();
  Thread& t = s.current_block->threads[s.current];
  t.wait = kind;
  fiber_switch(t.context, s.scheduler);
}

// The exchange buffer of this thread's next warp collective.
inline std::array<Slot, 32>& next_exchange() {
  State& s = state();
  Thread& t = s.current_block->threads[s.current];
  return s.current_block->exchange[s.current / 32][t.collectives++ % 2];
}

inline unsigned char* dynamic_shared_memory() { return current_block().shared.dynamic_base() + kGuard; }

template <typename T>
T& static_shared(const void* site) {
  return *static_cast<T*>(current_block().shared.static_object(site, sizeof(T)));
}

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

// __syncwarp: a collective without data.
inline void sync_warp() {
  next_exchange();
  wait_at(Wait::warp);
}

[[noreturn]] inline void thread_entry() {
  State& s = state();
  s.body();
  Thread& t = s.current_block->threads[s.current];
  t.done = true;
  fiber_switch(t.context, s.scheduler);  // never resumed
  std::abort();
}

inline std::string block_name(const Block& b) {
  std::string r = "block (";
  r.append(std::to_string(b.index.x)).append(", ").append(std::to_string(b.index.y)).append(", ");
  return r.append(std::to_string(b.index.z)).append(")");
}

[[noreturn]] inline void fail(const State& s, const Block& b, const std::string& what) {
  throw std::runtime_error("cuda emulator: " + block_name(b) + ": " + what + " (MLR_EMU_SEED=" +
                           std::to_string(seed_base()) + ", launch " + std::to_string(s.launches) + ")");
}

// Runs block b until every live thread waits at __syncthreads (then releases them) or has exited.
// Returns whether the block has finished.
inline bool run_phase(State& s, Block& b) {
  s.current_block = &b;
  while (!b.ready.empty()) {
    const size_t r = s.random.below(b.ready.size());
    const int i = b.ready[r];
    b.ready[r] = b.ready.back();
    b.ready.pop_back();
    s.current = i;
    fiber_switch(s.scheduler, b.threads[i].context);
    Thread& t = b.threads[i];
    const int w = i / 32;
    if (t.done) {
      ++b.exited;
      ++b.warp_exited[w];
      if (b.warp_arrived[w] > 0)
        fail(s, b, "lane " + std::to_string(i % 32) + " of warp " + std::to_string(w) +
                       " exited while other lanes wait at a warp collective (divergent collective)");
    } else if (t.wait == Wait::block) {
      ++b.at_barrier;
    } else if (t.wait == Wait::warp) {
      if (b.warp_exited[w] > 0)
        fail(s, b, "lanes of warp " + std::to_string(w) + " meet a warp collective after others exited (divergent collective)");
      if (++b.warp_arrived[w] == 32) {
        const uint64_t n = b.threads[w * 32].collectives;
        for (int lane = 0; lane < 32; ++lane) {
          Thread& l = b.threads[w * 32 + lane];
          if (l.collectives != n)
            fail(s, b, "lanes 0 and " + std::to_string(lane) + " of warp " + std::to_string(w) +
                           " diverge at a collective");
          l.wait = Wait::none;
          b.ready.push_back(w * 32 + lane);
        }
        b.warp_arrived[w] = 0;
      }
    }
  }
  const std::string damaged = b.shared.damaged_guard();
  if (!damaged.empty()) fail(s, b, "a write outside shared memory: " + damaged);
  const int threads = int(b.threads.size());
  for (size_t w = 0; w < b.warp_arrived.size(); ++w)
    if (b.warp_arrived[w] > 0)
      fail(s, b, "warp " + std::to_string(w) + ": some lanes wait at a warp collective, others at __syncthreads " +
                     "(divergent barrier)");
  if (b.exited == threads) return true;
  if (b.exited > 0)
    fail(s, b, std::to_string(b.exited) + " threads exited while others wait at __syncthreads (divergent barrier)");
  for (int i = 0; i < threads; ++i) {
    b.threads[i].wait = Wait::none;
    b.ready.push_back(i);
  }
  b.at_barrier = 0;
  return false;
}

inline void start_block(State& s, Block& b, int slot, uint64_t linear, size_t shared_bytes) {
  const dim3 grid = s.grid, block = s.block;
  const int threads = int(block.x * block.y * block.z);
  b.linear = linear;
  b.index = uint3{unsigned(linear % grid.x), unsigned(linear / grid.x % grid.y),
                  unsigned(linear / (uint64_t(grid.x) * grid.y))};
  b.threads.assign(threads, Thread{});
  b.exchange.assign(threads / 32, {});
  b.warp_arrived.assign(threads / 32, 0);
  b.warp_exited.assign(threads / 32, 0);
  b.ready.resize(threads);
  b.at_barrier = b.exited = 0;
  b.shared.reset(shared_bytes);
  constexpr size_t kStack = 64 * 1024;
  for (int i = 0; i < threads; ++i) {
    Thread& t = b.threads[i];
    t.index = uint3{unsigned(i) % block.x, (unsigned(i) / block.x) % block.y, unsigned(i) / (block.x * block.y)};
    fiber_init(t.context, s.stacks[size_t(slot) * threads + i].get(), kStack, thread_entry);
    b.ready[i] = i;
  }
}

// Why the device refuses this launch configuration ("" when it accepts it), and the error code the
// real runtime gives. `smem_allowed`: the kernel's dynamic shared memory limit.
inline std::string invalid_launch(dim3 grid, dim3 block, size_t shared_bytes, size_t smem_allowed, cudaError_t& code) {
  const DeviceProperties& d = devices().properties[current_device()];
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  code = cudaErrorInvalidConfiguration;
  auto dims = [](dim3 v) {
    std::string r = "(";  // appended piece by piece: GCC 12 warns falsely (-Wrestrict) on "(" + to_string(..)
    r.append(std::to_string(v.x)).append(", ").append(std::to_string(v.y)).append(", ");
    return r.append(std::to_string(v.z)).append(")");
  };
  if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      threads > uint64_t(mlr::cuda::kMaxThreadsPerBlock))
    return "block " + dims(block) + ": at most (1024, 1024, 64) and 1024 threads";
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
    return "grid " + dims(grid) + ": at most (2^31 - 1, 65535, 65535), none zero";
  code = cudaErrorInvalidValue;
  if (shared_bytes > d.smem_optin)
    return std::to_string(shared_bytes) + " bytes of dynamic shared memory; sm_" + std::to_string(d.sm) +
           " allows at most " + std::to_string(d.smem_optin) + " per block";
  if (shared_bytes > smem_allowed)
    return std::to_string(shared_bytes) + " bytes of dynamic shared memory; the kernel allows " +
           std::to_string(smem_allowed) + " (cudaFuncAttributeMaxDynamicSharedMemorySize)";
  code = cudaSuccess;
  return {};
}

// Resident blocks: two, so that blocks interleave; MLR_EMU_RESIDENT overrides (1 runs blocks one
// after another).
inline int resident_blocks() {
  static const int n = [] {
    const char* v = std::getenv("MLR_EMU_RESIDENT");
    const int r = v != nullptr && *v != 0 ? std::atoi(v) : 2;
    return r < 1 ? 1 : r;
  }();
  return n;
}

// Runs kernel() as every thread of every block of `grid`. Throws std::runtime_error for a launch the
// device refuses (see invalid_launch; tests call this directly), divergence and shared-memory
// writes out of bounds.
inline void launch(dim3 grid, dim3 block, size_t shared_bytes, std::function<void()> kernel,
                   size_t smem_allowed = SIZE_MAX) {
  static std::mutex serial;  // one emulated device: launches from several host threads take turns
  std::lock_guard<std::mutex> lock(serial);
  cudaError_t code;
  const std::string invalid = invalid_launch(grid, block, shared_bytes, smem_allowed, code);
  if (!invalid.empty()) throw std::runtime_error("cuda emulator: launch refused: " + invalid);
  State& s = state();
  const int threads = static_cast<int>(block.x * block.y * block.z);
  if (threads % 32 != 0) throw std::runtime_error("cuda emulator: block size must be a multiple of 32");
  ++s.launches;
  s.seed = seed_base() * 0x100000001B3ull + s.launches;
  s.random = Random{s.seed};
  s.grid = grid;
  s.block = block;
  s.body = std::move(kernel);
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  const int slots = int(std::min<uint64_t>(blocks, uint64_t(resident_blocks())));
  constexpr size_t kStack = 64 * 1024;
  while (s.stacks.size() < size_t(slots) * threads) s.stacks.emplace_back(new unsigned char[kStack]);  // not zeroed
  if (s.resident.size() < size_t(slots)) s.resident.resize(slots);
  std::vector<int> active;
  uint64_t next = 0;
  for (int k = 0; k < slots; ++k) {
    start_block(s, s.resident[k], k, next++, shared_bytes);
    active.push_back(k);
  }
  while (!active.empty()) {
    const size_t pick = s.random.below(active.size());
    const int k = active[pick];
    if (!run_phase(s, s.resident[k])) continue;
    if (next < blocks) {
      start_block(s, s.resident[k], k, next++, shared_bytes);
    } else {
      active[pick] = active.back();
      active.pop_back();
    }
  }
  s.current_block = nullptr;
}

// MLR_LAUNCH(cfg, kernel)(args...) in the emulated build: checks the configuration as the runtime
// does (a refused launch runs nothing and leaves its error for cudaGetLastError), then runs the
// whole grid before returning, as if every launch were followed by a device synchronisation.
template <typename... Params>
auto launcher(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes = 0,
              cudaStream_t stream = nullptr) {
  return [=](auto&&... args) {
    ++stream_of(stream)->work;
    const auto& limits = kernel_smem_limits();
    const auto it = limits.find({reinterpret_cast<const void*>(kernel), current_device()});
    const size_t allowed = it == limits.end() ? mlr::cuda::kDefaultDynamicSmem : it->second;
    cudaError_t code;
    const std::string invalid = invalid_launch(grid, block, shared_bytes, allowed, code);
    if (!invalid.empty()) {
      set_error(code, "launch refused: " + invalid);
      return;
    }
    std::tuple<Params...> params(args...);
    launch(grid, block, shared_bytes, [&] { std::apply(kernel, params); }, allowed);
  };
}

}  // namespace mlr::cuda_emulation

// The CUDA built-ins, for kernel source compiled by the host compiler.
#define threadIdx (::mlr::cuda_emulation::self().index)
#define blockIdx (::mlr::cuda_emulation::current_block().index)
#define blockDim (::mlr::cuda_emulation::state().block)
#define gridDim (::mlr::cuda_emulation::state().grid)
// Static shared memory is declared with MLR_SHARED (cuda_utils.cuh), which gives each resident
// block its own poisoned, guarded object; a plain __shared__ would be one object for all blocks.
#undef __shared__
#define __shared__ static_assert(false, "declare static shared memory with MLR_SHARED (cuda_utils.cuh)");
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

inline void __syncthreads() { ::mlr::cuda_emulation::wait_at(::mlr::cuda_emulation::Wait::block); }
inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) { ::mlr::cuda_emulation::sync_warp(); }

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

// The caching CPU allocator (tensor/cpu_allocator.h): reuse by size class, the byte counters, the
// bound on cached memory, poisoning, alignment; and the CPU runtime's figures (tensor/cpu_runtime.h).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "tensor/cpu_allocator.h"
#include "tensor/cpu_runtime.h"
#include "tensor/device.h"
#include "tensor/tensor.h"

using namespace mlr;

TEST_CASE("cpu allocator: size classes round up by at most 1/8 (64 bytes below 4 KiB)") {
  CHECK(CpuAllocator::class_size(0) == 64);
  CHECK(CpuAllocator::class_size(1) == 64);
  CHECK(CpuAllocator::class_size(65) == 128);
  CHECK(CpuAllocator::class_size(4096) == 4096);
  CHECK(CpuAllocator::class_size(4097) == 4096 + 512);
  CHECK(CpuAllocator::class_size(1 << 20) == size_t(1) << 20);
  CHECK(CpuAllocator::class_size((1 << 20) + 1) == (size_t(1) << 20) + (size_t(1) << 17));
  for (size_t n : {size_t(5000), size_t(123457), size_t(3) << 28, size_t(999999999)}) {
    const size_t c = CpuAllocator::class_size(n);
    CHECK(c >= n);
    CHECK(c - n <= n / 8);
    CHECK(c % 64 == 0);
  }
}

TEST_CASE("cpu allocator: a freed block is handed out again for a request of its class") {
  CpuAllocator alloc(false);
  void* a = alloc.allocate(100000);
  CHECK(reinterpret_cast<uintptr_t>(a) % 64 == 0);
  alloc.deallocate(a, 100000);
  void* b = alloc.allocate(99000);  // same class (98304 < 99000, 100000 <= 106496)
  CHECK(b == a);
  const CpuAllocatorStats s = alloc.stats();
  CHECK(s.hits == 1);
  CHECK(s.misses == 1);
  CHECK(s.current_bytes == 99000);
  CHECK(s.peak_bytes == 100000);
  CHECK(s.cached_bytes == 0);
  CHECK(s.reserved_bytes == CpuAllocator::class_size(100000));
  void* c = alloc.allocate(300000);  // another class: a new block
  CHECK(c != a);
  alloc.deallocate(b, 99000);
  alloc.deallocate(c, 300000);
  CHECK(alloc.stats().current_bytes == 0);
  CHECK(alloc.stats().cached_bytes == alloc.stats().reserved_bytes);
  alloc.release_cached();
  CHECK(alloc.stats().reserved_bytes == 0);
  CHECK(alloc.stats().cached_bytes == 0);
}

TEST_CASE("cpu allocator: small blocks are not cached") {
  CpuAllocator alloc(false);
  void* p = alloc.allocate(100);
  CHECK(alloc.stats().reserved_bytes == 128);
  alloc.deallocate(p, 100);
  CHECK(alloc.stats().reserved_bytes == 0);
  CHECK(alloc.stats().cached_bytes == 0);
}

TEST_CASE("cpu allocator: cached blocks never hold reserved memory far above the live peak") {
  CpuAllocator alloc(false);
  const size_t mib = size_t(1) << 20;
  // Live peak: 8 MiB. Then requests of ever new sizes, one at a time, as evaluation batches make.
  std::vector<void*> blocks;
  for (int i = 0; i < 8; ++i) blocks.push_back(alloc.allocate(mib));
  for (void* p : blocks) alloc.deallocate(p, mib);
  for (int i = 1; i <= 40; ++i) {
    const size_t n = mib + static_cast<size_t>(i) * 200000;
    void* p = alloc.allocate(n);
    CHECK(alloc.stats().reserved_bytes <= 8 * mib + 8 * mib / 16 + CpuAllocator::class_size(n));
    alloc.deallocate(p, n);
  }
  CHECK(alloc.stats().current_bytes == 0);
  CHECK(alloc.stats().reserved_bytes <= 8 * mib + 8 * mib / 16 + CpuAllocator::class_size(9 * mib));
}

TEST_CASE("cpu allocator: the same allocations step after step are all hits after the first") {
  CpuAllocator alloc(false);
  const std::vector<size_t> sizes = {1 << 20, 3 << 18, 5000, 70000, 1 << 22, 1 << 20};
  for (int step = 0; step < 3; ++step) {
    const int64_t misses_before = alloc.stats().misses;
    std::vector<void*> live;
    for (size_t n : sizes) live.push_back(alloc.allocate(n));
    for (size_t i = 0; i < sizes.size(); ++i) alloc.deallocate(live[i], sizes[i]);
    if (step > 0) CHECK(alloc.stats().misses == misses_before);
  }
}

TEST_CASE("cpu allocator: poisoning fills every block handed out, fresh or reused, with 0xFF") {
  CpuAllocator alloc(true);
  for (int round = 0; round < 2; ++round) {
    auto* p = static_cast<unsigned char*>(alloc.allocate(50000));
    bool all = true;
    for (size_t i = 0; i < 50000; ++i) all = all && p[i] == 0xFF;
    CHECK(all);
    std::memset(p, 0, 50000);  // the next round must not see these zeros
    alloc.deallocate(p, 50000);
  }
}

TEST_CASE("cpu allocator: concurrent allocation and release keep the counters exact") {
  CpuAllocator alloc(false);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&alloc, t] {
      for (int i = 0; i < 200; ++i) {
        const size_t n = 4096 + static_cast<size_t>((i * 7 + t) % 13) * 10000;
        void* p = alloc.allocate(n);
        static_cast<char*>(p)[n - 1] = 1;
        alloc.deallocate(p, n);
      }
    });
  for (auto& th : threads) th.join();
  const CpuAllocatorStats s = alloc.stats();
  CHECK(s.current_bytes == 0);
  CHECK(s.hits + s.misses == 800);
  CHECK(s.cached_bytes == s.reserved_bytes);
}

TEST_CASE("cpu tensors: memory_stats counts live bytes and the cache; empty_cache releases it") {
  const MemoryStats before = memory_stats(Device::cpu());
  {
    Tensor t = empty({1 << 20}, DType::f32);
    CHECK(memory_stats(Device::cpu()).current_bytes == before.current_bytes + (size_t(4) << 20));
    CHECK(memory_stats(Device::cpu()).reserved_bytes >= before.current_bytes + (size_t(4) << 20));
  }
  CHECK(memory_stats(Device::cpu()).current_bytes == before.current_bytes);
  empty_cache(Device::cpu());
  CHECK(cpu_allocator().stats().cached_bytes == 0);
  CHECK(memory_stats(Device::cpu()).reserved_bytes >= memory_stats(Device::cpu()).current_bytes);
}

TEST_CASE("cpu runtime: MFU is achieved FLOP/s over the peak, unknown without a peak") {
  // 400 tokens/s x 415 MFLOP per token = 166 GFLOP/s of 200: 83%.
  CHECK(model_flops_utilization(400.0, 415e6, 200e9) == doctest::Approx(0.83));
  CHECK(model_flops_utilization(400.0, 415e6, 0.0) == -1.0);
  CHECK(model_flops_utilization(0.0, 415e6, 200e9) == 0.0);
}

TEST_CASE("cpu runtime: one thread count for our loops and BLAS; the GEMM probe gives a plausible rate") {
  const int threads = cpu_threads();
  set_cpu_threads(1);
  CHECK(cpu_threads() == 1);
  const double rate = measure_cpu_matmul_flops(DType::f32, 128, 2);
  CHECK(rate > 1e8);   // 0.1 GFLOP/s: far below any CPU this runs on
  CHECK(rate < 1e14);  // 100 TFLOP/s: far above any CPU core
  set_cpu_threads(threads);
  CHECK(cpu_threads() == threads);
  CHECK(blas_description().find("OpenBLAS") != std::string::npos);
}

TEST_CASE("cpu allocator: with the cache off every block goes back at once, counters still exact") {
  CpuAllocator alloc(false, false);
  void* p = alloc.allocate(1 << 20);
  CHECK(alloc.stats().reserved_bytes == size_t(1) << 20);
  alloc.deallocate(p, 1 << 20);
  CHECK(alloc.stats().reserved_bytes == 0);
  CHECK(alloc.stats().cached_bytes == 0);
  CHECK(alloc.stats().peak_bytes == size_t(1) << 20);
}

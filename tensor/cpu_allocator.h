// CPU tensor memory: a caching allocator. Freed blocks are kept by size class and handed out again,
// so a training step that allocates the same activations as the step before reuses the same pages
// instead of faulting fresh ones in from the kernel (large blocks come from mmap and go back to it
// on free, so without the cache every step pays for zeroing and faulting every activation again).
//
// Size classes: requests under 4 KiB are rounded to 64 bytes and not cached (malloc serves those
// well); larger ones are rounded up to one of 8 classes per power of two (at most 12.5% slack).
// The cache never holds the process much above the peak of live tensor bytes: on a miss that would
// take reserved bytes (live + cached) above the highest live total seen so far (plus 1/16 of it), the
// least recently freed blocks are released first. So memory stays near an uncached allocator's peak,
// and shapes that change every call (evaluation batches) cannot grow the cache without bound.
// Under AddressSanitizer nothing is cached, so a use after free still reaches the sanitizer; nor with
// MLR_CPU_CACHE=0 (comparisons, valgrind).
//
// Blocks are 64-byte aligned (cache line, AVX-512). Memory is never zeroed: with poisoning on (the
// MLR_CPU_POISON environment variable, or Debug builds), every block handed out is filled with 0xFF
// bytes (NaN in every float dtype, -1 in integers), so code that reads memory it did not write fails
// its tests instead of passing on the zeros of fresh pages.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace mlr {

struct CpuAllocatorStats {
  size_t current_bytes = 0;   // requested bytes of live allocations
  size_t peak_bytes = 0;      // the largest current_bytes since the last reset_peak
  size_t reserved_bytes = 0;  // held from the system: live blocks and cached blocks, in class sizes
  size_t cached_bytes = 0;    // free blocks kept for reuse
  int64_t hits = 0;           // allocations served from the cache
  int64_t misses = 0;         // allocations that went to the system
};

class CpuAllocator {
 public:
  // cache = false: every block goes straight back to the system (the counters still count).
  CpuAllocator(bool poison, bool cache = true);
  ~CpuAllocator();
  CpuAllocator(const CpuAllocator&) = delete;
  CpuAllocator& operator=(const CpuAllocator&) = delete;

  void* allocate(size_t nbytes);
  void deallocate(void* p, size_t nbytes);  // nbytes as given to allocate
  void release_cached();                    // frees every cached block
  void reset_peak();
  CpuAllocatorStats stats() const;
  bool poisons() const { return poison_; }

  // The class size a request is served with (what reserved_bytes counts).
  static size_t class_size(size_t nbytes);

 private:
  struct FreeBlock {
    void* ptr;
    size_t bytes;
  };
  void release_oldest_locked();

  const bool poison_;
  const bool cache_;
  mutable std::mutex mutex_;
  std::list<FreeBlock> lru_;  // front: freed longest ago
  std::unordered_map<size_t, std::vector<std::list<FreeBlock>::iterator>> free_by_class_;
  size_t live_class_bytes_ = 0;  // class bytes of live blocks
  size_t high_water_ = 0;        // the largest live_class_bytes_ ever (never reset)
  CpuAllocatorStats stats_;
};

// The process's allocator behind every CPU Storage (poisoning from MLR_CPU_POISON=1, or on in
// Debug builds unless MLR_CPU_POISON=0; caching unless MLR_CPU_CACHE=0).
CpuAllocator& cpu_allocator();

}  // namespace mlr

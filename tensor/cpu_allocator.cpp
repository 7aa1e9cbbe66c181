#include "tensor/cpu_allocator.h"

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <string>

#include "tensor/error.h"

namespace mlr {

namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kSmallest = 4096;  // smaller requests bypass the cache
constexpr int kClassesPerDoubling = 8;

// Under AddressSanitizer (the fuzz builds) every block goes back to malloc at once, so a use after
// free is still caught instead of landing in a cached block.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCache = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCache = false;
#else
constexpr bool kCache = true;
#endif
#else
constexpr bool kCache = true;
#endif

// MLR_CPU_CACHE=0 turns the cache off (for comparisons, and for memory checkers like valgrind).
bool cache_from_environment() {
  const char* v = std::getenv("MLR_CPU_CACHE");
  return !(v && std::string(v) == "0");
}

bool poison_from_environment() {
  const char* v = std::getenv("MLR_CPU_POISON");
  if (v && *v) return std::string(v) != "0";
#ifdef NDEBUG
  return false;
#else
  return true;
#endif
}

}  // namespace

size_t CpuAllocator::class_size(size_t nbytes) {
  const size_t n = std::max<size_t>(nbytes, 1);
  if (n < kSmallest) return (n + kAlignment - 1) / kAlignment * kAlignment;
  // n in [2^e, 2^(e+1)): round up to a multiple of 2^e / 8.
  const int e = std::bit_width(n) - 1;
  const size_t step = size_t(1) << (e - std::bit_width(unsigned(kClassesPerDoubling)) + 1);
  return (n + step - 1) / step * step;
}

CpuAllocator::CpuAllocator(bool poison, bool cache) : poison_(poison), cache_(cache && kCache) {}

CpuAllocator::~CpuAllocator() { release_cached(); }

void* CpuAllocator::allocate(size_t nbytes) {
  const size_t bytes = class_size(nbytes);
  void* p = nullptr;
  {
    std::lock_guard lock(mutex_);
    if (bytes >= kSmallest) {
      auto it = free_by_class_.find(bytes);
      if (it != free_by_class_.end() && !it->second.empty()) {
        auto block = it->second.back();  // the most recently freed: likeliest still in cache
        it->second.pop_back();
        p = block->ptr;
        lru_.erase(block);
        stats_.cached_bytes -= bytes;
        ++stats_.hits;
      } else {
        // Keep reserved bytes within the highest live total (and a sixteenth of it in slack, so that
        // a step that peaks a little higher than the last does not flush the cache): release what was
        // freed longest ago.
        const size_t limit = std::max(high_water_, live_class_bytes_ + bytes) + high_water_ / 16;
        while (!lru_.empty() && stats_.reserved_bytes + bytes > limit) release_oldest_locked();
      }
    }
    if (!p) {
      p = std::aligned_alloc(kAlignment, bytes);
      if (!p)
        throw Error(fmt::format("cpu: out of memory allocating {} bytes ({} bytes held by tensors, {} cached)", nbytes,
                                stats_.current_bytes, stats_.cached_bytes));
      stats_.reserved_bytes += bytes;
      ++stats_.misses;
    }
    live_class_bytes_ += bytes;
    high_water_ = std::max(high_water_, live_class_bytes_);
    stats_.current_bytes += nbytes;
    stats_.peak_bytes = std::max(stats_.peak_bytes, stats_.current_bytes);
  }
  if (poison_) std::memset(p, 0xFF, bytes);
  return p;
}

void CpuAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  const size_t bytes = class_size(nbytes);
  std::lock_guard lock(mutex_);
  live_class_bytes_ -= bytes;
  stats_.current_bytes -= nbytes;
  if (bytes < kSmallest || !cache_) {
    std::free(p);
    stats_.reserved_bytes -= bytes;
    return;
  }
  lru_.push_back({p, bytes});
  free_by_class_[bytes].push_back(std::prev(lru_.end()));
  stats_.cached_bytes += bytes;
}

void CpuAllocator::release_oldest_locked() {
  const FreeBlock block = lru_.front();
  auto& list = free_by_class_[block.bytes];
  list.erase(std::find(list.begin(), list.end(), lru_.begin()));
  lru_.pop_front();
  std::free(block.ptr);
  stats_.cached_bytes -= block.bytes;
  stats_.reserved_bytes -= block.bytes;
}

void CpuAllocator::release_cached() {
  std::lock_guard lock(mutex_);
  while (!lru_.empty()) release_oldest_locked();
  free_by_class_.clear();
}

void CpuAllocator::reset_peak() {
  std::lock_guard lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
}

CpuAllocatorStats CpuAllocator::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

CpuAllocator& cpu_allocator() {
  // Never destroyed: tensors in other static objects may be freed after main returns.
  static CpuAllocator* allocator = new CpuAllocator(poison_from_environment(), cache_from_environment());
  return *allocator;
}

}  // namespace mlr

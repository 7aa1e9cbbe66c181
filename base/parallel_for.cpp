#include "base/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mlr {

int thread_count(int requested) {
  if (requested > 0) return requested;
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& job) {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> first_failed{n};
  std::mutex mutex;
  std::exception_ptr error;
  int64_t error_index = n;
  const auto worker = [&] {
    while (true) {
      const int64_t i = next.fetch_add(1);
      if (i >= n || i > first_failed.load()) return;
      try {
        job(i);
      } catch (...) {
        std::lock_guard lock(mutex);
        if (i < error_index) {
          error_index = i;
          error = std::current_exception();
        }
        int64_t f = first_failed.load();
        while (i < f && !first_failed.compare_exchange_weak(f, i)) {
        }
      }
    }
  };
  const int t = static_cast<int>(std::min<int64_t>(threads, n));
  if (t <= 1) {
    worker();
  } else {
    std::vector<std::thread> pool;
    for (int k = 1; k < t; ++k) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace mlr

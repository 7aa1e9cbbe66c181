// parallel_for: every index once, on several threads; the first error in index order wins.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "base/parallel_for.h"

using namespace mlr;

TEST_CASE("parallel_for runs each index exactly once") {
  for (int threads : {1, 3, 8}) {
    std::vector<std::atomic<int>> runs(1000);
    parallel_for(1000, threads, [&](int64_t i) { runs[static_cast<size_t>(i)]++; });
    for (const auto& r : runs) REQUIRE(r.load() == 1);
  }
  parallel_for(0, 4, [](int64_t) { FAIL("no index to run"); });
}

TEST_CASE("parallel_for uses up to the requested threads, the caller among them") {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  std::atomic<int> waiting{0};
  parallel_for(4, 4, [&](int64_t) {
    {
      std::lock_guard lock(mutex);
      seen.insert(std::this_thread::get_id());
    }
    // Hold each job until all four have started, so four distinct threads must be running them.
    waiting++;
    while (waiting.load() < 4) std::this_thread::yield();
  });
  CHECK(seen.size() == 4);
  CHECK(seen.count(std::this_thread::get_id()) == 1);
}

TEST_CASE("parallel_for rethrows the error of the lowest failing index") {
  for (int threads : {1, 4}) {
    std::atomic<int> started_after_failure{0};
    CHECK_THROWS_WITH_AS(parallel_for(200, threads,
                                      [&](int64_t i) {
                                        if (i == 150) started_after_failure++;
                                        if (i == 7 || i == 90) throw std::runtime_error("job " + std::to_string(i));
                                      }),
                         "job 7", std::runtime_error);
    if (threads == 1) CHECK(started_after_failure.load() == 0);
  }
}

TEST_CASE("thread_count: a positive request as given, else the hardware's") {
  CHECK(thread_count(3) == 3);
  CHECK(thread_count(0) >= 1);
  CHECK(thread_count(-1) == thread_count(0));
}

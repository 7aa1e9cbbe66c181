// Parallel loops over independent jobs (tokenising shards, loading shards, encoding requests).
#pragma once

#include <cstdint>
#include <functional>

namespace mlr {

// Threads to use for `requested` (<= 0: one per hardware thread, at least 1).
int thread_count(int requested);

// Runs job(i) for i in [0, n) on up to `threads` threads (the calling thread is one of them; with
// one thread, or n <= 1, everything runs on the caller). If jobs throw, the error of the lowest
// index is rethrown after all threads stop, and jobs above a failed index are not started: the
// error reported is the first in index order, whatever the scheduling.
void parallel_for(int64_t n, int threads, const std::function<void(int64_t)>& job);

}  // namespace mlr

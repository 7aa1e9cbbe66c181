// Collectives that run while the caller computes, on a communicator of their own
// (ProcessGroup::new_communicator: separate connections), so they never interleave with the ones
// the caller issues on the process group's communicator (the sharded base's all-gathers during
// backward, statistics). Jobs run one at a time in submission order; every rank must submit the
// same jobs in the same order, as with any collective.
//
//   CollectiveWorker worker(group.new_communicator(device, "grad"));
//   CollectiveWork w = worker.submit([flat](Communicator& c) mutable { c.all_reduce(flat); });
//   ... backward goes on ...
//   w.wait();   // rethrows the job's error (a CollectiveError naming rank, collective and peers)
//
// How the job runs beside the caller depends on the communicator:
// - CPU (Gloo): a collective blocks its thread until done, so the worker has a thread of its own
//   that runs the jobs.
// - CUDA (NCCL, Communicator::queues_on_device): no thread. submit() runs the job on the calling
//   thread with the communicator queueing each collective on its communication stream, behind the
//   compute stream's work so far, and returns; the device runs it while the compute stream goes
//   on with later kernels. wait() checks completion (within the timeout) and puts the compute
//   stream behind it.
// The tensors a job touches must stay alive and untouched by the caller until its wait() returns.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>

#include "dist/communicator.h"

namespace mlr::dist {

class CollectiveWorker {
 public:
  explicit CollectiveWorker(std::unique_ptr<Communicator> comm);
  // Thread: lets the running job finish and drops the queued ones (their owners wait for what they
  // need before this, except while failing), then stops the thread.
  ~CollectiveWorker();
  CollectiveWorker(const CollectiveWorker&) = delete;
  CollectiveWorker& operator=(const CollectiveWorker&) = delete;

  CollectiveWork submit(std::function<void(Communicator&)> job);
  Communicator& communicator() { return *comm_; }
  // Whether jobs run on the worker's thread (CPU) or are queued on the device (NCCL).
  bool threaded() const { return thread_.joinable(); }

 private:
  void loop();

  std::unique_ptr<Communicator> comm_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mlr::dist

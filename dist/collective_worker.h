// Collectives that run while the caller computes: a thread of its own drives a communicator of its
// own (ProcessGroup::new_communicator: a separate Gloo connection mesh), so its collectives never
// interleave with the ones the main thread issues on the process group's communicator (the sharded
// base's all-gathers during backward, statistics). Jobs run one at a time in submission order;
// every rank must submit the same jobs in the same order, as with any collective.
//
//   CollectiveWorker worker(group.new_communicator(Device::cpu(), "grad"));
//   CollectiveWork w = worker.submit([flat](Communicator& c) mutable { c.all_reduce(flat); });
//   ... backward goes on ...
//   w.wait();   // rethrows the job's error (a CollectiveError naming rank, collective and peers)
//
// The tensors a job touches must stay alive and untouched by the caller until its wait() returns.
// Jobs are CPU work here: a CUDA communicator would need the device set on this thread and stream
// ordering with the compute stream, which this worker does not do (data parallel on GPUs reduces
// after backward, dist/data_parallel.h).
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

class CollectiveWork {
 public:
  CollectiveWork() = default;
  explicit CollectiveWork(std::shared_future<void> done) : done_(std::move(done)) {}
  bool valid() const { return done_.valid(); }
  // Blocks until the job has run; rethrows what it threw.
  void wait() const { done_.get(); }
  bool finished() const {
    return done_.valid() && done_.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
  }

 private:
  std::shared_future<void> done_;
};

class CollectiveWorker {
 public:
  explicit CollectiveWorker(std::unique_ptr<Communicator> comm);
  // Lets the running job finish and drops the queued ones (their owners wait for what they need
  // before this, except while failing), then stops the thread.
  ~CollectiveWorker();
  CollectiveWorker(const CollectiveWorker&) = delete;
  CollectiveWorker& operator=(const CollectiveWorker&) = delete;

  CollectiveWork submit(std::function<void(Communicator&)> job);
  Communicator& communicator() { return *comm_; }

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

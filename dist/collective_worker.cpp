#include "dist/collective_worker.h"

namespace mlr::dist {

CollectiveWorker::CollectiveWorker(std::unique_ptr<Communicator> comm) : comm_(std::move(comm)) {
  MLR_CHECK(comm_ != nullptr, "dist: a collective worker needs a communicator");
  if (!comm_->queues_on_device()) thread_ = std::thread([this] { loop(); });
}

CollectiveWorker::~CollectiveWorker() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
    queue_.clear();  // their waits (if anyone still waits) report a broken promise
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

CollectiveWork CollectiveWorker::submit(std::function<void(Communicator&)> job) {
  if (!threaded()) return comm_->start(job);
  std::packaged_task<void()> task([this, job = std::move(job)] { job(*comm_); });
  CollectiveWork work(task.get_future().share());
  {
    std::lock_guard lock(mutex_);
    MLR_CHECK(!stop_, "dist: rank {}: a collective was submitted to a worker that is stopping", comm_->rank());
    queue_.push_back(std::move(task));
  }
  wake_.notify_one();
  return work;
}

void CollectiveWorker::loop() {
  while (true) {
    std::packaged_task<void()> task;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();  // an exception is stored in the task's future for wait()
  }
}

}  // namespace mlr::dist

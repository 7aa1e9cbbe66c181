// A communicator that queues its jobs as NCCL does (Communicator::queues_on_device), for machines
// without a GPU: start() returns at once and the job's collectives run, on a Gloo communicator,
// when its work is waited for. A device runs a queued job at some time between start() and
// wait(); a worker thread (CPU) runs it as soon as it can, this one as late as it can, so code
// that is right with both does not depend on when a queued job runs. What start() does not check
// here is NCCL's own part (streams and events), which only a GPU run tests (dist_nccl_world1).
#pragma once

#include <future>
#include <memory>
#include <string>

#include "dist/communicator.h"

namespace mlr::test {

class DeferredCommunicator : public dist::Communicator {
 public:
  explicit DeferredCommunicator(std::unique_ptr<dist::Communicator> inner)
      : Communicator(inner->rank(), inner->world_size(), inner->timeout(), {}), inner_(std::move(inner)) {}

  std::string backend() const override { return "deferred " + inner_->backend(); }
  Device device() const override { return inner_->device(); }
  void all_reduce(Tensor& t, dist::ReduceOp op) override { inner_->all_reduce(t, op); }
  void reduce_scatter(const Tensor& input, Tensor& output, dist::ReduceOp op) override {
    inner_->reduce_scatter(input, output, op);
  }
  void all_gather(const Tensor& input, Tensor& output) override { inner_->all_gather(input, output); }
  void broadcast(Tensor& t, int root) override { inner_->broadcast(t, root); }
  void barrier() override { inner_->barrier(); }

  bool queues_on_device() const override { return true; }
  dist::CollectiveWork start(const std::function<void(dist::Communicator&)>& job) override {
    ++started_;
    return dist::CollectiveWork(std::async(std::launch::deferred, [this, job] {
                                  job(*inner_);
                                  ++ran_;
                                }).share());
  }

  // Jobs started, and jobs whose collectives have run (waited for).
  int started() const { return started_; }
  int ran() const { return ran_; }

 private:
  std::unique_ptr<dist::Communicator> inner_;
  int started_ = 0, ran_ = 0;
};

}  // namespace mlr::test

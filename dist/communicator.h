// Collectives over the ranks of a job, one interface over two libraries: Gloo for CPU tensors
// (dist/gloo_communicator.cpp, ranks in separate processes over TCP) and NCCL for CUDA tensors
// (dist/nccl_communicator.cpp). Every call is collective (each rank calls it, in the same order,
// with tensors of the same shape and dtype), works in place on contiguous tensors, and has a
// timeout; a failure throws CollectiveError naming this rank, the collective (with its sequence
// number) and what is known about the peers (dist/process_group.h's heartbeats: which rank died
// or is behind).
//
//   all_reduce(t, op)              t <- sum (or mean) of t over the ranks
//   reduce_scatter(in, out, op)    out <- chunk `rank` of the reduced in   (in: world x out elements)
//   all_gather(in, out)            out <- in of rank 0, in of rank 1, ...   (out: world x in elements)
//   broadcast(t, root)             t <- t of rank root
//   barrier()                      returns once every rank has called it
//
// Reductions run in the tensor's dtype (f32, f64, bf16, f16, i32, i64); bf16 and f16 add in f32
// and round once per hop, and every rank receives the same bytes, so ranks that start equal stay
// equal after identical optimizer steps.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <string>

#include "base/error.h"
#include "tensor/tensor.h"

namespace mlr::dist {

enum class ReduceOp { sum, avg };

class CollectiveError : public Error {
 public:
  using Error::Error;
};

class Communicator;

// A job of collectives started to run beside the caller's work (dist/collective_worker.h): on a
// thread of its own (CPU communicators) or queued on a device's communication stream (NCCL).
// wait() returns once the job's results may be used by what the caller does next (for a queued
// job: its completion checked within the timeout, and the device's compute stream ordered after
// it), and rethrows the job's error; later calls return (or rethrow) the same at once.
class CollectiveWork {
 public:
  CollectiveWork() = default;
  explicit CollectiveWork(std::shared_future<void> done) : done_(std::move(done)) {}
  bool valid() const { return done_.valid(); }
  void wait() const { done_.get(); }

 private:
  std::shared_future<void> done_;
};

// What a communicator reports to its process group: the collective it enters (for the
// heartbeat), and on a failure a description of the peers (who died, who is behind).
struct CollectiveObserver {
  std::function<void(int64_t sequence, const char* collective)> on_enter;
  std::function<std::string()> describe_peers;
};

class Communicator {
 public:
  Communicator(int rank, int world_size, std::chrono::milliseconds timeout, CollectiveObserver observer)
      : rank_(rank), world_size_(world_size), timeout_(timeout), observer_(std::move(observer)) {}
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  void set_timeout(std::chrono::milliseconds timeout) { timeout_ = timeout; }
  virtual std::string backend() const = 0;
  // Where its tensors live: the CPU (Gloo) or one GPU (NCCL).
  virtual Device device() const = 0;

  virtual void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) = 0;
  virtual void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op = ReduceOp::sum) = 0;
  virtual void all_gather(const Tensor& input, Tensor& output) = 0;
  virtual void broadcast(Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  // Whether start() exists: the communicator queues its collectives on a device stream (NCCL), so
  // a job of them can be started without a thread. CPU communicators block the calling thread
  // until a collective is done; running them beside other work takes a thread
  // (dist/collective_worker.h).
  virtual bool queues_on_device() const { return false; }
  // Queues the collectives `job` makes on this communicator and returns at once; they run in
  // queue order on the device while the caller goes on, reading their inputs as the device's
  // compute stream left them when each was queued. The caller must not touch the job's tensors
  // until wait() returns. Throws unless queues_on_device().
  virtual CollectiveWork start(const std::function<void(Communicator&)>& job);

 protected:
  // Checks the arguments every backend shares (contiguous, dtype, device, sizes) and counts the
  // call; returns its sequence number.
  int64_t enter(const char* collective, const Tensor& t, Device expected_device);
  void check_same(const char* collective, const Tensor& a, const Tensor& b, int64_t b_over_a_numel_num,
                  int64_t b_over_a_numel_den);
  // The error of a failed call: "dist: rank 1 of 2: all_reduce #12 (f32, 4096 elements) failed
  // after 0.4 s: <cause>; peers: <what the process group knows>".
  CollectiveError failure(const char* collective, int64_t sequence, const std::string& shape, double seconds,
                          const std::string& cause) const;

  int rank_, world_size_;
  std::chrono::milliseconds timeout_;
  CollectiveObserver observer_;
  int64_t sequence_ = 0;
};

// Shape text for errors: "f32, 4096 elements".
std::string describe(const Tensor& t);

}  // namespace mlr::dist

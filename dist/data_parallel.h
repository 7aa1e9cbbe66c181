// Data parallel training on top of a communicator: the gradients of the trainable parameters
// summed over the ranks in buckets, the start weights made identical, and small vectors of
// statistics (losses, token counts, load counts) reduced.
//
// Buckets: the parameters in reverse order (the order backward finishes their gradients), per
// dtype and device, about bucket_bytes each; the same on every rank. A bucket is one flat buffer:
// each member's gradient, then one flag per member (1 where this rank has a gradient for it), so
// one collective reduces both; a parameter whose flags sum to 0 had no gradient on any rank and
// stays undefined (the optimizer skips it, as on one rank); one missing on some ranks only counts
// as zeros there.
//
// Overlap with backward (when constructed with a collective worker): arm() before the
// backward that completes the step's gradients (the last micro-batch: the earlier ones accumulate
// locally, PyTorch's no_sync) installs a gradient-ready hook on every parameter (autograd's
// set_grad_ready_hook). When every member of a bucket is ready, and every earlier bucket has
// started, its buffer is filled and its reduction handed to the worker, which runs it while
// backward goes on. finish() after backward starts the buckets still waiting (a parameter that got
// no gradient on this rank holds its bucket back until then), waits for all of them, and writes
// the sums back into the gradients. Buckets start in bucket order on every rank, so the worker's
// collectives match across ranks. Without a worker, finish() reduces every bucket after backward
// on the main communicator; the layout and the arithmetic are the same, so both give the same
// bytes.
//
// Sharded gradients (ZeRO-2, `owners` given: the rank that keeps each parameter's optimizer state,
// dist/zero.h): a bucket's buffer holds world chunks of equal size, chunk r the members owned by
// rank r (and their flags), and is reduce-scattered: each rank receives only its own chunk, and
// the gradients of parameters it does not own are dropped as soon as they are in the buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/variable.h"
#include "dist/collective_worker.h"
#include "dist/communicator.h"

namespace mlr::dist {

struct GradientBucketOptions {
  size_t bucket_bytes = size_t{25} << 20;
  // ZeRO-2: owners[i] is the rank that keeps parameter i's gradient; empty: every rank keeps all.
  std::vector<int> owners;
};

class GradientBuckets {
 public:
  // `worker` (may be null): runs the reductions overlapped with backward; its communicator must
  // span the same ranks as comm.
  GradientBuckets(Communicator& comm, std::vector<Variable> params, GradientBucketOptions options = {},
                  std::unique_ptr<CollectiveWorker> worker = nullptr);
  // Removes the hooks; reductions still in flight are waited for (their errors dropped), except
  // while an exception unwinds.
  ~GradientBuckets();
  GradientBuckets(const GradientBuckets&) = delete;
  GradientBuckets& operator=(const GradientBuckets&) = delete;

  bool overlapped() const { return worker_ != nullptr; }
  // Before the backward pass after which the gradients are complete: buckets start as soon as
  // their gradients are ready. A no-op without a worker.
  void arm();
  // After that backward: grad <- sum over ranks of grad (ZeRO-2: for the parameters this rank
  // owns; the others' gradients are dropped).
  void finish();
  // finish() without arm(): every bucket reduced now.
  void all_reduce() { finish(); }
  // Every parameter's value <- rank `root`'s (start from identical weights whatever each rank's
  // initialisation did).
  void broadcast_parameters(int root = 0);
  size_t bucket_count() const { return buckets_.size(); }

  // Test hook: called on the training thread with "ready <param>" (a gradient-ready hook fired),
  // "start <bucket>" (a bucket's reduction was launched) and "reduced <bucket>" (finish() found it
  // done and wrote it back), in the order they happen.
  std::function<void(const std::string&)> on_event;

 private:
  struct Bucket {
    std::vector<size_t> members;  // indices into params_
    std::vector<int64_t> offset;  // where each member's gradient sits in the buffer
    std::vector<int64_t> flag;    // where each member's flag sits
    int64_t chunk = 0;            // elements per rank's chunk (ZeRO-2), or the whole buffer
    size_t pending = 0;           // members whose gradient is not ready in this backward
    bool started = false;
    Tensor buffer, received;      // received: this rank's reduced chunk (ZeRO-2) or the buffer
    CollectiveWork work;
  };
  void layout(Bucket& b) const;
  void gradient_ready(size_t param);
  void start(size_t bucket);
  void write_back(Bucket& b);
  void note(const std::string& event) const {
    if (on_event) on_event(event);
  }
  bool sharded() const { return !options_.owners.empty(); }

  Communicator& comm_;
  std::vector<Variable> params_;
  GradientBucketOptions options_;
  std::unique_ptr<CollectiveWorker> worker_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // param index -> bucket
  std::vector<bool> ready_;        // per parameter, in the armed backward
  size_t next_start_ = 0;          // buckets start in order: the first not started
  bool armed_ = false;
};

// values <- elementwise sum over the ranks (f64 / i64).
void all_reduce_sum(Communicator& comm, std::vector<double>& values);
void all_reduce_sum(Communicator& comm, std::vector<int64_t>& values);

}  // namespace mlr::dist

// Data parallel training on top of a communicator: the gradients of the trainable parameters
// summed over the ranks in buckets, the start weights made identical, and small vectors of
// statistics (losses, token counts, load counts) reduced.
//
// The gradients are reduced after backward, once per optimizer step (after the last micro-batch
// of gradient accumulation): autograd/ has no per-leaf gradient hooks, so communication does not
// overlap backward. Parameters are bucketed in order, per dtype and device, about bucket_bytes
// each (one collective per bucket: flatten, all-reduce, scatter back). A parameter whose gradient
// is undefined on every rank stays undefined (the optimizer skips it, as it would on one rank);
// undefined on some ranks only, it counts as zeros there. A world of one rank runs the same
// collectives (copies), so a job launched with WORLD_SIZE=1 exercises the whole path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "autograd/variable.h"
#include "dist/communicator.h"

namespace mlr::dist {

class GradientBuckets {
 public:
  GradientBuckets(Communicator& comm, std::vector<Variable> params, size_t bucket_bytes = size_t{25} << 20);
  // grad <- sum over ranks of grad, for every parameter.
  void all_reduce();
  // Every parameter's value <- rank `root`'s (start from identical weights whatever each rank's
  // initialisation did).
  void broadcast_parameters(int root = 0);
  size_t bucket_count() const { return buckets_.size(); }

 private:
  Communicator& comm_;
  std::vector<Variable> params_;
  std::vector<std::vector<size_t>> buckets_;  // indices into params_
};

// values <- elementwise sum over the ranks (f64 / i64).
void all_reduce_sum(Communicator& comm, std::vector<double>& values);
void all_reduce_sum(Communicator& comm, std::vector<int64_t>& values);

}  // namespace mlr::dist

// ZeRO-1 and -2 by whole parameters: each trainable parameter has one owner rank, which alone
// keeps its optimizer state (AdamW's moments and f32 master weights) and updates it; the others
// then receive its new values. ZeRO-1: gradients are still all-reduced on every rank
// (dist/data_parallel.h), so clipping sees the whole gradient; before the optimizer step each rank
// drops the gradients of the parameters it does not own, and an optimizer that skips parameters
// without a gradient (optim/adamw.h) never creates their state there: optimizer memory is about
// 1/world per rank. ZeRO-2: the gradient buckets are reduce-scattered by owner instead, so each
// rank receives only its own parameters' gradients and drops the others' as soon as they are in a
// bucket; the trainer sums the squared norms over the ranks to clip.
//
// Owners are assigned greedily, largest parameter first, to the rank holding the fewest bytes so
// far (ties to the lower rank): deterministic, the same on every rank, balanced to within one
// parameter. Parameters stay whole (no element-level sharding), so one huge tensor (an embedding)
// bounds the balance.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "autograd/variable.h"
#include "dist/communicator.h"

namespace mlr::dist {

class ParameterOwners {
 public:
  ParameterOwners(Communicator& comm, std::vector<Variable> params);
  int owner(size_t index) const { return owners_[index]; }
  bool mine(size_t index) const { return owners_[index] == comm_.rank(); }
  size_t size() const { return params_.size(); }
  // Before the optimizer step: the gradients of parameters owned elsewhere are dropped.
  void drop_others_gradients();
  // After the step: every parameter's values from its owner.
  void broadcast_from_owners();
  // Collective: rank 0 receives, for every parameter, the tensors named `names(index)` that its
  // owner's `held(index)` returns (an owner may hold none, e.g. before the first step); rank 0
  // returns them all, the others nothing. The tensors are optimizer state: the parameter's shape,
  // f32 (f64 for an f64 parameter).
  std::map<std::string, Tensor> gather_to_rank0(
      const std::function<std::map<std::string, Tensor>(size_t)>& held,
      const std::function<std::vector<std::string>(size_t)>& names) const;

 private:
  Communicator& comm_;
  std::vector<Variable> params_;
  std::vector<int> owners_;
};

}  // namespace mlr::dist

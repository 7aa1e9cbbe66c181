#include "dist/data_parallel.h"

#include "tensor/ops.h"

namespace mlr::dist {

GradientBuckets::GradientBuckets(Communicator& comm, std::vector<Variable> params, size_t bucket_bytes)
    : comm_(comm), params_(std::move(params)) {
  std::vector<size_t> current;
  size_t bytes = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].data();
    const bool same_kind = current.empty() || (params_[current.front()].data().dtype() == p.dtype() &&
                                               params_[current.front()].data().device() == p.device());
    if (!current.empty() && (!same_kind || bytes + p.nbytes() > bucket_bytes)) {
      buckets_.push_back(std::move(current));
      current.clear();
      bytes = 0;
    }
    current.push_back(i);
    bytes += p.nbytes();
  }
  if (!current.empty()) buckets_.push_back(std::move(current));
}

void GradientBuckets::all_reduce() {
  // Which parameters have a gradient on some rank.
  std::vector<int64_t> present(params_.size());
  for (size_t i = 0; i < params_.size(); ++i) present[i] = params_[i].grad().defined() ? 1 : 0;
  all_reduce_sum(comm_, present);
  for (const std::vector<size_t>& bucket : buckets_) {
    std::vector<size_t> members;
    int64_t total = 0;
    for (size_t i : bucket) {
      if (present[i] == 0) continue;
      members.push_back(i);
      total += params_[i].data().numel();
    }
    if (members.empty()) continue;
    const Tensor& first = params_[members.front()].data();
    Tensor flat = empty({total}, first.options());
    int64_t offset = 0;
    for (size_t i : members) {
      const Tensor& g = params_[i].grad();
      const int64_t n = params_[i].data().numel();
      Tensor slot = flat.narrow(0, offset, n);
      if (g.defined()) {
        slot.copy_(g.reshape({n}));
      } else {
        slot.zero_();
      }
      offset += n;
    }
    comm_.all_reduce(flat, ReduceOp::sum);
    offset = 0;
    for (size_t i : members) {
      const Tensor& p = params_[i].data();
      const int64_t n = p.numel();
      Tensor reduced = flat.narrow(0, offset, n).view(p.shape());
      if (params_[i].grad().defined()) {
        Tensor g = params_[i].grad();
        g.copy_(reduced);
      } else {
        params_[i].set_grad(reduced.clone());
      }
      offset += n;
    }
  }
}

void GradientBuckets::broadcast_parameters(int root) {
  for (Variable& p : params_) {
    Tensor value = p.data();
    if (value.is_contiguous()) {
      comm_.broadcast(value, root);
    } else {
      Tensor copy = value.contiguous();
      comm_.broadcast(copy, root);
      value.copy_(copy);
    }
  }
}

void all_reduce_sum(Communicator& comm, std::vector<double>& values) {
  if (values.empty()) return;
  Tensor t = from_vector(values, {static_cast<int64_t>(values.size())});
  comm.all_reduce(t, ReduceOp::sum);
  values = t.to_vector<double>();
}

void all_reduce_sum(Communicator& comm, std::vector<int64_t>& values) {
  if (values.empty()) return;
  Tensor t = from_vector(values, {static_cast<int64_t>(values.size())});
  comm.all_reduce(t, ReduceOp::sum);
  values = t.to_vector<int64_t>();
}

}  // namespace mlr::dist

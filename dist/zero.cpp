#include "dist/zero.h"

#include <algorithm>
#include <numeric>

#include "dist/data_parallel.h"

namespace mlr::dist {

ParameterOwners::ParameterOwners(Communicator& comm, std::vector<Variable> params)
    : comm_(comm), params_(std::move(params)), owners_(params_.size(), 0) {
  std::vector<size_t> order(params_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return params_[a].data().nbytes() > params_[b].data().nbytes(); });
  std::vector<size_t> load(static_cast<size_t>(comm_.world_size()), 0);
  for (size_t i : order) {
    const size_t r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    owners_[i] = static_cast<int>(r);
    load[r] += params_[i].data().nbytes();
  }
}

void ParameterOwners::drop_others_gradients() {
  for (size_t i = 0; i < params_.size(); ++i)
    if (!mine(i)) params_[i].zero_grad(/*set_to_none=*/true);
}

void ParameterOwners::broadcast_from_owners() {
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor value = params_[i].data();
    comm_.broadcast(value, owners_[i]);
  }
}

std::map<std::string, Tensor> ParameterOwners::gather_to_rank0(
    const std::function<std::map<std::string, Tensor>(size_t)>& held,
    const std::function<std::vector<std::string>(size_t)>& names) const {
  // Which (parameter, name) the owners hold: one sum over ranks of 0/1 flags.
  std::vector<std::map<std::string, Tensor>> mine_held(params_.size());
  std::vector<std::vector<std::string>> all_names(params_.size());
  std::vector<int64_t> present;
  for (size_t i = 0; i < params_.size(); ++i) {
    all_names[i] = names(i);
    if (mine(i)) mine_held[i] = held(i);
    for (const std::string& n : all_names[i]) present.push_back(mine(i) && mine_held[i].count(n) ? 1 : 0);
  }
  all_reduce_sum(comm_, present);
  std::map<std::string, Tensor> out;
  size_t k = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (const std::string& n : all_names[i]) {
      if (present[k++] == 0) continue;
      Tensor t;
      if (mine(i)) {
        t = mine_held[i].at(n).contiguous();
      } else {
        // Every rank takes part in the broadcast; the shape is the parameter's, the dtype f32
        // (f64 for f64 parameters), as AdamW keeps its state.
        const Tensor& p = params_[i].data();
        t = empty(p.shape(), {p.dtype() == DType::f64 ? DType::f64 : DType::f32, p.device()});
      }
      comm_.broadcast(t, owners_[i]);
      if (comm_.rank() == 0) out[n] = t;
    }
  }
  return out;
}

}  // namespace mlr::dist

#include "optim/adamw.h"

#include <cmath>
#include <map>
#include <regex>
#include <set>

#include "optim/grad_utils.h"
#include "optim/kernels/optim_kernels.h"

namespace mlr {
namespace {

bool is_low_precision(DType t) { return t == DType::bf16 || t == DType::f16; }
// The dtype of master weights and moments for a parameter of dtype t.
DType state_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

void validate_options(const AdamWOptions& o, const std::string& group) {
  MLR_CHECK(std::isfinite(o.lr) && o.lr >= 0, "AdamW: group '{}': lr must be >= 0 and finite, got {}", group, o.lr);
  MLR_CHECK(o.beta1 >= 0 && o.beta1 < 1, "AdamW: group '{}': beta1 must lie in [0, 1), got {}", group, o.beta1);
  MLR_CHECK(o.beta2 >= 0 && o.beta2 < 1, "AdamW: group '{}': beta2 must lie in [0, 1), got {}", group, o.beta2);
  MLR_CHECK(std::isfinite(o.eps) && o.eps >= 0, "AdamW: group '{}': eps must be >= 0 and finite, got {}", group,
            o.eps);
  MLR_CHECK(std::isfinite(o.weight_decay) && o.weight_decay >= 0,
            "AdamW: group '{}': weight_decay must be >= 0 and finite, got {}", group, o.weight_decay);
}

}  // namespace

bool NoDecayRules::matches(const std::string& name) const {
  for (const std::string& pattern : patterns) {
    std::regex re;
    try {
      re = std::regex(pattern);
    } catch (const std::regex_error& e) {
      throw Error(fmt::format("weight decay rules: invalid pattern \"{}\": {}", pattern, e.what()));
    }
    if (std::regex_search(name, re)) return true;
  }
  return false;
}

std::vector<ParamGroup> make_param_groups(const std::vector<std::pair<std::string, Variable>>& named_params,
                                          const AdamWOptions& options, const NoDecayRules& rules) {
  ParamGroup decay{"decay", {}, options};
  ParamGroup no_decay{"no_decay", {}, options};
  no_decay.options.weight_decay = 0.0;
  std::set<std::string> seen;
  for (size_t i = 0; i < named_params.size(); ++i) {
    const auto& [name, p] = named_params[i];
    MLR_CHECK(p.defined(), "make_param_groups: parameter {} ('{}') is undefined", i, name);
    if (!p.requires_grad()) continue;
    MLR_CHECK(!name.empty(), "make_param_groups: parameter {} (shape {}) has an empty name; the weight decay rules "
              "go by names", i, shape_str(p.shape()));
    MLR_CHECK(seen.insert(name).second, "make_param_groups: two parameters are named '{}'", name);
    ParamGroup& group = rules.matches(name) ? no_decay : decay;
    group.params.push_back(p);
    group.names.push_back(name);
  }
  std::vector<ParamGroup> groups;
  if (!decay.params.empty()) groups.push_back(std::move(decay));
  if (!no_decay.params.empty()) groups.push_back(std::move(no_decay));
  return groups;
}

AdamW::AdamW(std::vector<Variable> params, const AdamWOptions& options)
    : AdamW(std::vector<ParamGroup>{ParamGroup{"default", std::move(params), options}}) {}

AdamW::AdamW(std::vector<ParamGroup> groups) : groups_(std::move(groups)) {
  MLR_CHECK(!groups_.empty(), "AdamW: no parameter groups");
  std::set<const VariableImpl*> seen_params;
  std::set<std::string> seen_keys;
  slots_.resize(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    validate_options(group.options, group.name);
    MLR_CHECK(group.names.empty() || group.names.size() == group.params.size(),
              "AdamW: group '{}' has {} parameters but {} names", group.name, group.params.size(), group.names.size());
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Variable& p = group.params[i];
      MLR_CHECK(p.defined(), "AdamW: group '{}': parameter {} is undefined", group.name, i);
      const std::string key = !group.names.empty() ? group.names[i]
                              : p.name().empty()   ? fmt::format("group{}.param{}", g, i)
                                                   : p.name();
      MLR_CHECK(!key.empty(), "AdamW: group '{}': parameter {} has an empty name", group.name, i);
      MLR_CHECK(p.is_leaf() && p.requires_grad(), "AdamW: parameter '{}' is not a leaf that requires grad", key);
      MLR_CHECK(p.data().is_floating_point(), "AdamW: parameter '{}' has dtype {}, expected a floating dtype", key,
                dtype_name(p.dtype()));
      MLR_CHECK(seen_params.insert(p.impl().get()).second, "AdamW: parameter '{}' appears twice", key);
      MLR_CHECK(seen_keys.insert(key).second, "AdamW: two parameters have the state key '{}'", key);
      slots_[g].push_back(Slot{key, 0, {}, {}, {}});
    }
  }
}

void AdamW::set_lr_factor(double factor) {
  MLR_CHECK(std::isfinite(factor) && factor >= 0, "AdamW: lr factor must be >= 0 and finite, got {}", factor);
  lr_factor_ = factor;
}

double AdamW::group_lr(size_t group) const {
  MLR_CHECK(group < groups_.size(), "AdamW: group {} of {}", group, groups_.size());
  return groups_[group].options.lr * lr_factor_;
}

std::vector<Variable> AdamW::parameters() const {
  std::vector<Variable> all;
  for (const ParamGroup& group : groups_) all.insert(all.end(), group.params.begin(), group.params.end());
  return all;
}

void AdamW::zero_grad(bool set_to_none) { mlr::zero_grad(parameters(), set_to_none); }

Tensor AdamW::master_weights(size_t group, size_t index) const {
  const Slot& slot = slots_.at(group).at(index);
  if (!slot.exp_avg.defined()) return Tensor();
  return slot.master.defined() ? slot.master : groups_[group].params[index].data();
}

void AdamW::step() {
  // CUDA parameters are collected and updated by one fused launch after the loop; their tensors
  // (gradients made contiguous included) are kept alive here until then.
  std::vector<optim_kernels::AdamWWork> cuda_work;
  std::vector<Tensor> cuda_keep;
  cuda_keep.reserve(4 * num_parameters_with_grad());
  for (size_t g = 0; g < groups_.size(); ++g) {
    const AdamWOptions& o = groups_[g].options;
    const double lr = group_lr(g);
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Variable& p = groups_[g].params[i];
      if (!p.grad().defined()) continue;
      Slot& slot = slots_[g][i];
      Tensor data = p.data();
      const Tensor grad = p.grad().contiguous();
      MLR_CHECK(data.is_contiguous(), "AdamW: parameter '{}' (shape {}) is not contiguous", slot.key,
                shape_str(data.shape()));
      MLR_CHECK(grad.shape() == data.shape(), "AdamW: parameter '{}' has shape {} but its gradient {}", slot.key,
                shape_str(data.shape()), shape_str(grad.shape()));
      if (!slot.exp_avg.defined()) {
        const TensorOptions state_options{state_dtype(data.dtype()), data.device()};
        slot.exp_avg = zeros(data.shape(), state_options);
        slot.exp_avg_sq = zeros(data.shape(), state_options);
        if (is_low_precision(data.dtype())) slot.master = data.to(DType::f32);
      }
      MLR_CHECK(slot.exp_avg.shape() == data.shape(),
                "AdamW: parameter '{}' changed shape from {} to {} after its first step", slot.key,
                shape_str(slot.exp_avg.shape()), shape_str(data.shape()));
      slot.step += 1;
      Tensor master = slot.master.defined() ? slot.master : data;
      const optim_kernels::AdamWScalars scalars{lr, o.beta1, o.beta2, o.eps, o.weight_decay, slot.step};
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
      if (data.device().is_cuda() && master.dtype() == DType::f32) {
        cuda_keep.push_back(master);
        Tensor* master_ref = &cuda_keep.back();
        cuda_keep.push_back(grad);
        const Tensor* grad_ref = &cuda_keep.back();
        Tensor* out_ref = nullptr;
        if (slot.master.defined()) {
          cuda_keep.push_back(data);
          out_ref = &cuda_keep.back();
        }
        cuda_work.push_back({master_ref, &slot.exp_avg, &slot.exp_avg_sq, grad_ref, out_ref, scalars});
        continue;
      }
#endif
      optim_kernels::adamw_update(master, slot.exp_avg, slot.exp_avg_sq, grad, scalars);
      if (slot.master.defined()) data.copy_(slot.master);
    }
  }
#if defined(MLR_CUDA) && defined(MLR_CUDA_KERNELS)
  optim_kernels::adamw_update_multi_cuda(cuda_work);
#endif
}

size_t AdamW::num_parameters_with_grad() const {
  size_t n = 0;
  for (const ParamGroup& group : groups_)
    for (const Variable& p : group.params) n += p.grad().defined() ? 1 : 0;
  return n;
}

TrainingState AdamW::state_dict() const {
  TrainingState out;
  nlohmann::json groups = nlohmann::json::array();
  nlohmann::json state = nlohmann::json::object();
  for (size_t g = 0; g < groups_.size(); ++g) {
    const AdamWOptions& o = groups_[g].options;
    nlohmann::json keys = nlohmann::json::array();
    for (const Slot& slot : slots_[g]) {
      keys.push_back(slot.key);
      if (!slot.exp_avg.defined()) continue;
      state[slot.key] = {{"step", slot.step}};
      out.tensors[slot.key + ".exp_avg"] = slot.exp_avg.clone();
      out.tensors[slot.key + ".exp_avg_sq"] = slot.exp_avg_sq.clone();
      if (slot.master.defined()) out.tensors[slot.key + ".master"] = slot.master.clone();
    }
    groups.push_back({{"name", groups_[g].name},
                      {"lr", o.lr},
                      {"beta1", o.beta1},
                      {"beta2", o.beta2},
                      {"eps", o.eps},
                      {"weight_decay", o.weight_decay},
                      {"params", std::move(keys)}});
  }
  out.scalars = {{"format", "mlr.adamw"}, {"version", 1},      {"lr_factor", lr_factor_},
                 {"groups", std::move(groups)}, {"state", std::move(state)}};
  return out;
}

void AdamW::load_state_dict(const TrainingState& saved) {
  const char* what = "AdamW state";
  const nlohmann::json& s = saved.scalars;
  const auto format = detail::json_field<std::string>(s, "format", what);
  const auto version = detail::json_field<int64_t>(s, "version", what);
  MLR_CHECK(format == "mlr.adamw" && version == 1, "{}: format \"{}\" version {}, expected \"mlr.adamw\" version 1",
            what, format, version);
  const auto lr_factor = detail::json_field<double>(s, "lr_factor", what);
  MLR_CHECK(std::isfinite(lr_factor) && lr_factor >= 0, "{}: lr_factor {} is not >= 0", what, lr_factor);
  const auto groups = detail::json_field<nlohmann::json>(s, "groups", what);
  MLR_CHECK(groups.is_array() && groups.size() == groups_.size(), "{}: {} parameter groups saved, this optimizer has {}",
            what, groups.is_array() ? groups.size() : 0, groups_.size());

  // Everything is checked and built aside, then committed: a failed load changes nothing.
  std::vector<AdamWOptions> options(groups_.size());
  std::map<std::string, std::pair<size_t, size_t>> where;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const nlohmann::json& group = groups[g];
    const std::string group_what = fmt::format("{}: group {}", what, g);
    options[g].lr = detail::json_field<double>(group, "lr", group_what.c_str());
    options[g].beta1 = detail::json_field<double>(group, "beta1", group_what.c_str());
    options[g].beta2 = detail::json_field<double>(group, "beta2", group_what.c_str());
    options[g].eps = detail::json_field<double>(group, "eps", group_what.c_str());
    options[g].weight_decay = detail::json_field<double>(group, "weight_decay", group_what.c_str());
    validate_options(options[g], groups_[g].name);
    const auto keys = detail::json_field<std::vector<std::string>>(group, "params", group_what.c_str());
    MLR_CHECK(keys.size() == slots_[g].size(), "{}: {} parameters saved, this optimizer's group '{}' has {}",
              group_what, keys.size(), groups_[g].name, slots_[g].size());
    for (size_t i = 0; i < keys.size(); ++i) {
      MLR_CHECK(keys[i] == slots_[g][i].key, "{}: parameter {} is '{}' in the saved state but '{}' here", group_what,
                i, keys[i], slots_[g][i].key);
      where[keys[i]] = {g, i};
    }
  }

  std::vector<std::vector<Slot>> slots = slots_;
  for (auto& group_slots : slots) {
    for (Slot& slot : group_slots) slot = Slot{slot.key, 0, {}, {}, {}};
  }
  const auto state = detail::json_field<nlohmann::json>(s, "state", what);
  MLR_CHECK(state.is_object(), "{}: \"state\" must be an object, got {}", what, state.type_name());
  for (const auto& item : state.items()) {
    // Named, not a structured binding: clang before 16 cannot capture bindings in the lambda below.
    const std::string& key = item.key();
    const nlohmann::json& entry = item.value();
    auto found = where.find(key);
    MLR_CHECK(found != where.end(), "{}: state for '{}', which is not a parameter of this optimizer", what, key);
    const auto [g, i] = found->second;
    const Tensor& data = groups_[g].params[i].data();
    Slot& slot = slots[g][i];
    const std::string entry_what = fmt::format("{}: parameter '{}'", what, key);
    slot.step = detail::json_field<int64_t>(entry, "step", entry_what.c_str());
    MLR_CHECK(slot.step >= 1 && slot.step < INT64_MAX,
              "{}: step {} (a saved state has made at least one step, and one more must be countable)", entry_what,
              slot.step);
    auto take = [&](const char* suffix) {
      const std::string name = key + suffix;
      auto t = saved.tensors.find(name);
      MLR_CHECK(t != saved.tensors.end(), "{}: tensor '{}' is missing", what, name);
      MLR_CHECK(t->second.shape() == data.shape() && t->second.dtype() == state_dtype(data.dtype()),
                "{}: tensor '{}' is {} {}, expected {} {} for a {} parameter", what, name,
                dtype_name(t->second.dtype()), shape_str(t->second.shape()), dtype_name(state_dtype(data.dtype())),
                shape_str(data.shape()), dtype_name(data.dtype()));
      return t->second.to(data.device()).clone();
    };
    slot.exp_avg = take(".exp_avg");
    slot.exp_avg_sq = take(".exp_avg_sq");
    if (is_low_precision(data.dtype())) slot.master = take(".master");
  }

  for (size_t g = 0; g < groups_.size(); ++g) groups_[g].options = options[g];
  slots_ = std::move(slots);
  lr_factor_ = lr_factor;
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < slots_[g].size(); ++i) {
      if (slots_[g][i].master.defined()) {
        Tensor data = groups_[g].params[i].data();
        data.copy_(slots_[g][i].master);
      }
    }
  }
}

}  // namespace mlr

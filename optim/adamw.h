// AdamW (Loshchilov & Hutter, decoupled weight decay) over parameter groups, with the arithmetic
// of torch.optim.AdamW (amsgrad off, bias correction on): see optim/kernels/optim_kernels.h.
//
// Precision: every trainable parameter has f32 master weights and f32 moments, whatever its dtype.
// For an f32 parameter the master weights are the parameter itself (updated in place, no copy);
// for a bf16/f16 parameter they are an f32 copy, updated by each step and then cast (round to
// nearest even) into the parameter once. f64 parameters (CPU tests) keep f64 moments.
//
// State is created lazily, as in torch: at a parameter's first step with a gradient, from the
// parameter's values at that moment (so weights loaded after constructing the optimizer are
// picked up). Parameters without a gradient at a step are skipped, and their step count does not
// advance. Replacing a low-precision parameter's data (set_data) after its first step is not
// seen by its master copy: load weights before training, or restore with load_state_dict.
//
//   auto groups = make_param_groups(model.named_parameters(true), {.lr = 2e-4, .weight_decay = 0.01});
//   AdamW opt(groups);
//   opt.set_lr_factor(schedule.factor(step));  opt.step();  zero_grad(opt.parameters());
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"
#include "optim/state.h"

namespace mlr {

// torch.optim.AdamW's defaults.
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

struct ParamGroup {
  std::string name;  // for logs and state ("decay", "no_decay", ...)
  std::vector<Variable> params;
  AdamWOptions options;  // options.lr is this group's peak lr (before the schedule's factor)
  // The parameters' full names (Module::named_parameters), their keys in the optimizer state.
  // Empty: each parameter's Variable::name, or "group{g}.param{i}" when that is empty too.
  std::vector<std::string> names = {};
};

// Which parameters get no weight decay: a parameter whose name matches (std::regex_search) any of
// `patterns`. The defaults cover biases, normalisation weights (LayerNorm/RMSNorm:
// "input_layernorm", "model.norm", "ln_f", ...) and scale parameters ("scale", "lora_scale",
// "..._scales"). An empty list decays every parameter.
struct NoDecayRules {
  std::vector<std::string> patterns = {R"((^|\.)bias$)", R"(norm)", R"((^|[._])scales?($|[._]))"};
  bool matches(const std::string& name) const;
};

// Splits the trainable parameters (requires_grad; others are left out) of `named_params`
// (Module::named_parameters: full name, parameter) into "decay" (weight decay
// options.weight_decay) and "no_decay" (weight decay 0, as chosen by `rules`), keeping their
// order; names must be unique and non-empty, and become the state keys. Empty groups are dropped.
std::vector<ParamGroup> make_param_groups(const std::vector<std::pair<std::string, Variable>>& named_params,
                                          const AdamWOptions& options, const NoDecayRules& rules = {});

class AdamW {
 public:
  // Parameters must be leaves that require grad, of a floating dtype, contiguous, and appear once
  // in all groups together. Hyperparameters are checked (lr >= 0, betas in [0, 1), eps >= 0,
  // weight_decay >= 0).
  explicit AdamW(std::vector<ParamGroup> groups);
  AdamW(std::vector<Variable> params, const AdamWOptions& options);

  // One update of every parameter that has a gradient. Gradients are read as they are: unscale
  // and clip them first. CPU parameters use the reference loop; others the tensor-op composition
  // (optim/kernels/optim_kernels.h) until the fused CUDA kernel lands.
  void step();
  // The learning-rate multiplier set by a schedule: each group's lr is options.lr * factor.
  void set_lr_factor(double factor);
  double lr_factor() const { return lr_factor_; }
  double group_lr(size_t group) const;

  const std::vector<ParamGroup>& groups() const { return groups_; }
  // Every parameter, group by group.
  std::vector<Variable> parameters() const;
  void zero_grad(bool set_to_none = true);

  // The state key of a parameter (see ParamGroup::names).
  const std::string& key(size_t group, size_t index) const { return slots_[group][index].key; }
  // Updates made to a parameter (0 before its first step with a gradient).
  int64_t step_count(size_t group, size_t index) const { return slots_[group][index].step; }
  // The f32 master weights of a parameter (the parameter's data itself for f32/f64); undefined
  // before its first step.
  Tensor master_weights(size_t group, size_t index) const;

  // tensors: "{key}.exp_avg", "{key}.exp_avg_sq" and, for bf16/f16 parameters, "{key}.master"
  // (the f32 parameters' master weights are the parameters, saved with the model).
  // scalars: {"format": "mlr.adamw", "version": 1, "lr_factor", "groups": [{"name", "lr", "beta1",
  // "beta2", "eps", "weight_decay", "params": [keys]}], "state": {key: {"step": n}}}.
  // The tensors are clones: later steps do not change a saved state.
  TrainingState state_dict() const;
  // Restores a state_dict of an optimizer over the same parameters (same groups, keys, shapes and
  // dtypes), hyperparameters included (as torch does). The master weights of bf16/f16 parameters
  // are restored and cast into the parameters. Throws mlr::Error naming the first mismatch.
  void load_state_dict(const TrainingState& state);

 private:
  struct Slot {
    std::string key;
    int64_t step = 0;
    Tensor master;  // bf16/f16 parameters only
    Tensor exp_avg;
    Tensor exp_avg_sq;
  };
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<Slot>> slots_;
  double lr_factor_ = 1.0;
  size_t num_parameters_with_grad() const;
};

}  // namespace mlr

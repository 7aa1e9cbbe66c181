// AdaptedLinear: a frozen linear layer y = W0 x (+ bias) plus a trainable low-rank update.
// The adapters of this folder (LoRA, MultiLoRA, SMoRA, DoRA) derive from it and register their
// type in multilora/registry.h; see README.md for the math of each and for the adapter-file layout.
//
// The base weight W0 [out, in] and bias are held as Variables shared with whoever handed them over
// (a model's Linear: when the model moves or reloads them, the adapter sees it), but used as
// constants: the base product goes through autograd's linear with a detached weight, which
// saves no copy of x for it and never gives W0 a gradient. The adapter's own parameters are
// leaf Variables, named as in PEFT's files relative to the module ("lora_A.weight", ...).
// merge() and unmerge() write into W0's storage.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "autograd/variable.h"
#include "tensor/tensor.h"

namespace mlr {

struct AdapterType;  // multilora/registry.h

// The dtype adapter parameters default to: f64 for an f64 base weight (gradchecks), else f32
// (bf16/f16 bases keep f32 adapters; inputs are cast to it and the update cast back).
DType default_adapter_dtype(DType base_dtype);

// Inverted dropout on the adapter input, as torch.nn.Dropout in train mode: each element kept
// with probability 1 - p and scaled by 1 / (1 - p). The mask comes from `gen` (Philox), so runs
// are reproducible from the seed; it does not reproduce torch's random stream.
Variable adapter_dropout(const Variable& x, double p, Generator& gen);

class AdaptedLinear {
 public:
  // weight [out, in] floating point; bias [out] or undefined. A Tensor converts to a Variable.
  AdaptedLinear(Variable weight, Variable bias);
  virtual ~AdaptedLinear() = default;
  AdaptedLinear(const AdaptedLinear&) = delete;
  AdaptedLinear& operator=(const AdaptedLinear&) = delete;

  // The registered type (name, file format, config readers).
  virtual const AdapterType& type() const = 0;
  // y = W0 x + bias + update(x); x [..., in] -> [..., out]. When merged, just the base product.
  virtual Variable forward(const Variable& x) = 0;
  // The adapter's tensors as stored in adapter files, by name relative to the module path
  // ("lora_A.weight", ...). Trainable ones require grad; state such as SMoRA's selection bias
  // does not.
  virtual std::vector<std::pair<std::string, Variable>> named_tensors() const = 0;
  // Makes the non-trainable tensor `name` of named_tensors() use `handle` (a module buffer
  // created from its values) from now on; false when the adapter has no such state.
  virtual bool rebind_state(const std::string& name, const Variable& handle) { return false; }
  // Whether `name` is such state (a module buffer) rather than a parameter.
  virtual bool is_state(const std::string& name) const { return false; }
  // The trainable subset of named_tensors().
  std::vector<Variable> parameters() const;
  // The hyperparameters that go into adapter_config.json (shared by every module of a file).
  virtual nlohmann::json config_json() const = 0;
  // The dense update dW [out, in] in f32 (f64 for an f64 base), so that the adapted layer is
  // W0 + dW. Throws when merge_unsupported_reason() says why there is none.
  virtual Tensor delta_weight() const = 0;
  // Why no single weight matrix reproduces this adapter (SMoRA: an input-dependent update), or
  // nothing when merge() works.
  virtual std::optional<std::string> merge_unsupported_reason() const { return std::nullopt; }

  // W0 <- merged_weight(W0) (computed in f32, cast once into W0's dtype); forward then skips the
  // adapter.
  void merge();
  // W0 <- unmerged_weight(W0): restores W0 up to the rounding of W0's dtype.
  void unmerge();
  bool merged() const { return merged_; }

  // ---- hooks the trainer calls, whatever the type (defaults: nothing to do) ----
  // After each optimizer step (SMoRA: its load-balancing bias update).
  virtual void after_optimizer_step() {}
  // Training state beyond the adapter's tensors and dropout stream, for a checkpoint: stored in
  // trainer_state.json under training_state_key(), by module path; null when there is none.
  virtual std::string training_state_key() const { return {}; }
  virtual nlohmann::json training_state() const { return nullptr; }
  virtual void restore_training_state(const nlohmann::json& state) {}
  // Figures for the step's metrics.jsonl record (and TensorBoard when tensorboard_tag is set).
  struct Metric {
    std::string name;
    double value = 0;
    std::string tensorboard_tag;
  };
  virtual std::vector<Metric> step_metrics() const { return {}; }
  // Data-parallel training: counts this rank gathered during the step that after_optimizer_step
  // must see summed over all ranks (SMoRA: selections per rank); the trainer sums them in place
  // before calling it. Null when the type has none.
  virtual std::vector<int64_t>* step_counts_to_sum() { return nullptr; }

  // The Philox stream of this adapter's dropout masks: its (seed, offset) is part of a training
  // checkpoint, so a resumed run draws the same masks as an uninterrupted one.
  virtual Generator& dropout_generator() = 0;

  // Train mode enables dropout (and SMoRA's load counting); eval mode disables them.
  void train(bool on = true) { training_ = on; }
  bool training() const { return training_; }

  // ---- initial values computed from W0's values (AdapterType::initialises_from_base_weight) ----
  // An adapter made by AdapterConfig::make_adapter_awaiting_base_weight lacks them until
  // init_from_base_weight() computes them from W0, which must then hold its values (on a sharded
  // base: while its layer is gathered, dist/sharded_base.h), or load_adapter reads them from a
  // file (values_loaded()). Until then, reading them is an error that names the adapter.
  bool awaits_base_weight() const { return awaits_base_weight_; }
  void init_from_base_weight();
  void values_loaded() { awaits_base_weight_ = false; }
  // Where the adapter sits in its model ("model.layers.0.self_attn.q_proj"; inject_adapters sets
  // it), for messages; empty for an adapter made on its own.
  const std::string& module_path() const { return module_path_; }
  void set_module_path(std::string path) { module_path_ = std::move(path); }
  // "DoRA adapter 'model.layers.0.self_attn.q_proj'", or "DoRA adapter on a [out, in] weight".
  std::string describe() const;

  const Tensor& base_weight() const { return weight_.data(); }
  const Tensor& base_bias() const;  // undefined without bias
  const Variable& base_weight_variable() const { return weight_; }
  const Variable& base_bias_variable() const { return bias_; }
  int64_t in_features() const { return weight_.size(1); }
  int64_t out_features() const { return weight_.size(0); }
  DType adapter_dtype() const { return named_tensors().front().second.dtype(); }

 protected:
  // W0 x + bias with W0 constant (no saved input for W0).
  Variable base_forward(const Variable& x) const;
  // base + update, the update cast back to the base's dtype.
  Variable add_update(const Variable& base, const Variable& update) const;
  // W0 x without the bias, W0 constant.
  Variable base_product(const Variable& x) const;
  // The weight merge() writes and unmerge() restores, from the current one (f32, f64 for an f64
  // base): W0 + dW and W - dW unless the type overrides them (DoRA rescales rows).
  virtual Tensor merged_weight(const Tensor& w0);
  virtual Tensor unmerged_weight(const Tensor& merged);
  // x in the dtype of the adapter's parameters.
  static Variable to_dtype(const Variable& x, DType dtype);
  // What init_from_base_weight computes (W0 checked to hold values). Only types that
  // initialise_from_base_weight make adapters that await it.
  virtual void compute_from_base_weight() {}
  // Throws unless W0 holds values: a weight with none is one zero broadcast to its shape (a
  // sharded base's weight outside its layer's gather, a model loaded in part); `what` needed them.
  void require_base_weight_values(const std::string& what) const;
  // Throws naming the adapter while it awaits its base weight; `what` names the tensor read.
  void require_initialised(const std::string& what) const;

  Variable weight_;
  Variable bias_;
  DType adapter_dtype_;  // the dtype parameters are created in
  bool merged_ = false;
  bool training_ = true;
  bool awaits_base_weight_ = false;  // set by the constructor of an adapter made awaiting it
  std::string module_path_;
};

}  // namespace mlr

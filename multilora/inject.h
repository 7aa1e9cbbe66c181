// Putting adapters into a model: every Linear whose module name (the last component of its path)
// is a target, optionally only in some decoder layers, is replaced by an AdapterModule wrapping it.
//
//   MultiLoraConfig multilora;  // or any registered type's config (multilora/registry.h)
//   multilora.r = 8;
//   InjectionSpec spec;
//   spec.adapter = std::make_shared<MultiLoraConfig>(multilora);
//   spec.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
//   spec.layers_to_transform = {0, 1, 2};          // empty: every layer
//   std::vector<NamedAdapter> adapters = inject_adapters(model, spec);
//   save_adapter(dir, adapters, {"TinyLlama/TinyLlama-1.1B"});
//
// As PEFT does, injection first freezes every parameter of the model; the adapters' own
// parameters are then the only trainable ones (model.parameters(true)). The AdapterModule keeps
// the Linear's parameters under their own names ("...q_proj.weight", "...q_proj.bias"), shared,
// so the model's state dict keeps Hugging Face's names for the base weights, and adds the adapter's
// tensors next to them ("...q_proj.lora_A.weight", "...q_proj.multilora_scale", ...: the adapter
// file's keys without "base_model.model."). Move the model (Module::to) before injecting: the
// adapter keeps handles to the base weight and its own tensors, which to() updates in place,
// but SMoRA's selection bias must be read on the host each step anyway.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "multilora/adapter.h"
#include "multilora/adapter_file.h"
#include "multilora/lora.h"
#include "multilora/registry.h"
#include "nn/layers.h"
#include "nn/module.h"

namespace mlr {

class AdapterModule : public UnaryModule {
 public:
  AdapterModule(std::shared_ptr<Linear> base, std::unique_ptr<AdaptedLinear> adapter);
  // The adapter's forward, in the module's train/eval mode.
  Variable forward(const Variable& x) override;
  AdaptedLinear& adapter() const { return *adapter_; }
  // The Linear this module replaced (its weight and bias are this module's "weight" and "bias").
  const std::shared_ptr<Linear>& base() const { return base_; }

 protected:
  std::string extra_repr() const override;

 private:
  std::shared_ptr<Linear> base_;
  std::unique_ptr<AdaptedLinear> adapter_;
};

struct InjectionSpec {
  // The adapter type and its hyperparameters; every targeted Linear gets an adapter made from it.
  std::shared_ptr<const AdapterConfig> adapter = std::make_shared<LoraConfig>();
  std::vector<std::string> target_modules = {"q_proj", "v_proj"};
  // Decoder layer indices (the N of "layers.N." in the path); empty: all. With a list, modules
  // outside any "layers.N." are not adapted (PEFT's layers_to_transform).
  std::vector<int64_t> layers_to_transform;
  // Adapter initial values come from one Philox stream seeded here, module by module in model
  // order; module i's dropout stream is seeded with seed + 1 + i.
  uint64_t seed = 0;
  // The base weights have no values yet (a sharded base, dist/sharded_base.h): an adapter of a
  // type that initialises_from_base_weight (multilora/registry.h) is made awaiting them, to be
  // initialised with AdaptedLinear::init_from_base_weight once they are in memory, or loaded.
  bool defer_base_weight_reads = false;
};

// The layer index of a module path ("model.layers.3.mlp.up_proj" -> 3), or -1.
int64_t layer_index_of(const std::string& module_path);

// Wraps the targeted Linears (see above); throws listing the targets and the Linear names the
// model has when nothing matches, or when a target is already adapted.
std::vector<NamedAdapter> inject_adapters(Module& root, const InjectionSpec& spec);
// Wraps exactly the modules an adapter directory holds tensors for, with its config, and loads
// its values (errors as load_adapter's, plus paths the model lacks or that are not Linear).
std::vector<NamedAdapter> inject_adapter_from_file(Module& root, const std::string& dir);
// The adapters in a model, in module order.
std::vector<NamedAdapter> find_adapters(const Module& root);
// merge / unmerge every adapter (an adapter that cannot merge, SMoRA: the error of AdaptedLinear::merge).
void merge_adapters(const Module& root);
void unmerge_adapters(const Module& root);
// The model's state dict without adapter tensors, in registration order, after merging every
// adapter: the base weights under Hugging Face's names, ready for save_sharded. Throws if some
// adapter is not merged.
std::vector<std::pair<std::string, Tensor>> merged_base_state_dict(const Module& root);

}  // namespace mlr

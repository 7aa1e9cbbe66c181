// Module: a tree of named parameters, buffers and child modules, named as in PyTorch and Hugging
// Face checkpoints ("model.layers.0.self_attn.q_proj.weight"), so a state dict maps 1:1 onto a
// safetensors file.
//
//   class Block : public Module {
//     Block() : Module("Block") {
//       scale_ = register_parameter("scale", ones({4}));
//       proj_ = register_module("proj", std::make_shared<Linear>(4, 4));
//     }
//     Variable forward(const Variable& x) { return proj_->forward(x * scale_); }
//     Variable scale_;
//     ChildRef<Linear> proj_;
//   };
//
// Parameters are leaf Variables (requiring grad unless frozen); buffers are Variables that never
// require grad (rope tables, running statistics). Both are handles: `to()` and load_state_dict
// replace or overwrite their values, and every copy of the handle (the `scale_` member above) sees
// the change.
//
// Children sit in slots that keep their position and type: register_module<T> returns a
// ChildRef<T> that resolves the slot on every access, so replace_child (how an adapter wraps a
// Linear) takes effect in the parent's forward without the parent knowing. A replacement must be
// a T as well (checked, with an error naming the slot).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "autograd/variable.h"
#include "tensor/error.h"
#include "tensor/tensor.h"

namespace mlr {

class Module;

namespace detail {
struct ChildSlot {
  std::string name;
  std::shared_ptr<Module> module;
  // Whether a module may take this slot (it is a T for the ChildRef<T> that registered it).
  std::function<bool(const Module&)> accepts;
  std::string required_type;
};
}  // namespace detail

// A typed handle to a child slot. Copyable; valid as long as the owning module lives.
template <typename T>
class ChildRef {
 public:
  ChildRef() = default;
  explicit ChildRef(detail::ChildSlot* slot) : slot_(slot) {}
  T* get() const { return slot_ ? static_cast<T*>(slot_->module.get()) : nullptr; }
  T* operator->() const { return get(); }
  T& operator*() const { return *get(); }
  std::shared_ptr<T> ptr() const { return std::static_pointer_cast<T>(slot_->module); }
  explicit operator bool() const { return slot_ != nullptr && slot_->module != nullptr; }

 private:
  detail::ChildSlot* slot_ = nullptr;
};

// Result of a non-strict load_state_dict: what did not match (shape mismatches always throw).
struct LoadStateDictResult {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

class Module {
 public:
  // `type_name` appears in error messages and in to_string ("Linear", "LlamaAttention").
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  // ---- the tree ----
  // Parameters, deduplicated by identity (a tied weight is listed once, under its first name),
  // depth first in registration order: own parameters, then each child's with "child." prefixed.
  std::vector<std::pair<std::string, Variable>> named_parameters(bool trainable_only = false) const;
  std::vector<Variable> parameters(bool trainable_only = false) const;
  std::vector<std::pair<std::string, Variable>> named_buffers() const;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> named_children() const;
  // This module ("") and every descendant, depth first. The root's entry does not own it (the
  // caller does already).
  std::vector<std::pair<std::string, std::shared_ptr<const Module>>> named_modules() const;
  int64_t num_parameters(bool trainable_only = false) const;

  // The descendant at a dotted path ("model.layers.0.self_attn"); null when there is none.
  std::shared_ptr<Module> find_module(const std::string& path) const;
  // Throws naming the path and the first component that does not exist.
  std::shared_ptr<Module> module_at(const std::string& path) const;
  // Puts `replacement` in the slot of the direct child `name` and returns the module it held.
  // `replacement` must be of the type the slot was registered with.
  std::shared_ptr<Module> replace_child(const std::string& name, std::shared_ptr<Module> replacement);
  // replace_child on the parent of a dotted path.
  std::shared_ptr<Module> replace_module(const std::string& path, std::shared_ptr<Module> replacement);

  // ---- modes and placement ----
  // Recursively; modules read training() (dropout, adapters' statistics).
  void train(bool on = true);
  void eval() { train(false); }
  bool training() const { return training_; }
  // Moves every parameter and buffer to `device`, converting floating-point ones to `dtype` when
  // given (integer buffers keep their dtype). Gradients are dropped.
  void to(Device device, std::optional<DType> dtype = {});
  void to(DType dtype);
  // Freezes (false) or unfreezes every parameter.
  void requires_grad_(bool requires_grad);
  void zero_grad(bool set_to_none = true);

  // ---- state dict ----
  // Parameters and persistent buffers by full name. Values are shared, not copied. A tied
  // parameter appears under each of its names, as in torch.
  std::map<std::string, Tensor> state_dict() const;
  // The same in registration order (what a checkpoint writer wants).
  std::vector<std::pair<std::string, Tensor>> ordered_state_dict() const;
  // Copies each tensor of `state` into the parameter or buffer of that name (converting dtype and
  // device to the module's). Strict: one error lists every missing, unexpected and mis-shaped
  // name, and nothing is loaded. Not strict: missing and unexpected names are returned; a shape
  // mismatch still throws.
  LoadStateDictResult load_state_dict(const std::map<std::string, Tensor>& state, bool strict = true);

  // The tree, one line per module with its parameter shapes (for logs).
  std::string to_string() const;

 protected:
  // Registration: names are unique within a module and contain no '.'.
  Variable register_parameter(const std::string& name, Tensor value, bool requires_grad = true);
  // Registers an existing Variable (a parameter shared with another module: tied weights).
  Variable register_parameter(const std::string& name, Variable shared);
  // A persistent buffer is part of the state dict; a non-persistent one (derived tables) is not.
  Variable register_buffer(const std::string& name, Tensor value, bool persistent = true);
  template <typename T>
  ChildRef<T> register_module(const std::string& name, std::shared_ptr<T> module) {
    static_assert(std::is_base_of_v<Module, T>, "register_module: T must derive from Module");
    detail::ChildSlot* slot = add_child_slot(name, module, [](const Module& m) {
      return dynamic_cast<const T*>(&m) != nullptr;
    });
    return ChildRef<T>(slot);
  }
  // Hyperparameters shown by to_string ("in=64, out=128, bias=false").
  virtual std::string extra_repr() const { return ""; }

 private:
  struct Entry {
    std::string name;
    Variable var;
    bool persistent = true;
  };
  detail::ChildSlot* add_child_slot(const std::string& name, std::shared_ptr<Module> module,
                                    std::function<bool(const Module&)> accepts);
  void check_new_name(const std::string& name, const char* what) const;
  void collect_parameters(const std::string& prefix, std::vector<std::pair<std::string, Variable>>& out) const;
  void collect_buffers(const std::string& prefix, bool persistent_only,
                       std::vector<std::pair<std::string, Variable>>& out) const;
  void collect_modules(const std::string& prefix,
                       std::vector<std::pair<std::string, std::shared_ptr<const Module>>>& out) const;
  void append_tree(const std::string& name, int depth, std::string& out) const;

  std::string type_name_;
  bool training_ = true;
  std::vector<Entry> parameters_;
  std::vector<Entry> buffers_;
  std::vector<std::unique_ptr<detail::ChildSlot>> children_;  // unique_ptr: ChildRefs keep pointing
};

// A module mapping one activation to one: the interface of a slot an adapter may take over.
class UnaryModule : public Module {
 public:
  using Module::Module;
  virtual Variable forward(const Variable& x) = 0;
};

// An indexed list of children named "0", "1", ... (model.layers).
class ModuleList : public Module {
 public:
  ModuleList() : Module("ModuleList") {}
  template <typename T>
  ChildRef<T> push_back(std::shared_ptr<T> module) {
    return register_module(std::to_string(size_++), std::move(module));
  }
  int64_t size() const { return size_; }

 private:
  int64_t size_ = 0;
};

}  // namespace mlr

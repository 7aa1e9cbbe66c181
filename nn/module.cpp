#include "nn/module.h"

#include <set>
#include <unordered_set>

#include <fmt/format.h>

namespace mlr {

namespace {

std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = path.find('.', start);
    parts.push_back(path.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

}  // namespace

// ------------------------------------------------------------------ registration

void Module::check_new_name(const std::string& name, const char* what) const {
  MLR_CHECK(!name.empty() && name.find('.') == std::string::npos,
            "{}: cannot register {} named '{}': names must be non-empty and contain no '.'", type_name_, what, name);
  auto taken = [&](const std::vector<Entry>& entries) {
    for (const Entry& e : entries)
      if (e.name == name) return true;
    return false;
  };
  bool child_taken = false;
  for (const auto& c : children_) child_taken = child_taken || c->name == name;
  MLR_CHECK(!taken(parameters_) && !taken(buffers_) && !child_taken,
            "{}: cannot register {} '{}': the name is already taken", type_name_, what, name);
}

Variable Module::register_parameter(const std::string& name, Tensor value, bool requires_grad) {
  check_new_name(name, "parameter");
  MLR_CHECK(value.defined(), "{}: parameter '{}' is undefined", type_name_, name);
  Variable v = Variable::leaf(std::move(value), requires_grad, name);
  parameters_.push_back({name, v, true});
  return v;
}

Variable Module::register_parameter(const std::string& name, Variable shared) {
  check_new_name(name, "parameter");
  MLR_CHECK(shared.defined() && shared.is_leaf(), "{}: parameter '{}' must be a defined leaf Variable", type_name_,
            name);
  parameters_.push_back({name, shared, true});
  return shared;
}

Variable Module::register_buffer(const std::string& name, Tensor value, bool persistent) {
  check_new_name(name, "buffer");
  MLR_CHECK(value.defined(), "{}: buffer '{}' is undefined", type_name_, name);
  Variable v = Variable::leaf(std::move(value), false, name);
  buffers_.push_back({name, v, persistent});
  return v;
}

detail::ChildSlot* Module::add_child_slot(const std::string& name, std::shared_ptr<Module> module,
                                          std::function<bool(const Module&)> accepts) {
  check_new_name(name, "module");
  MLR_CHECK(module != nullptr, "{}: child module '{}' is null", type_name_, name);
  auto slot = std::make_unique<detail::ChildSlot>();
  slot->name = name;
  slot->required_type = module->type_name();
  slot->accepts = std::move(accepts);
  slot->module = std::move(module);
  children_.push_back(std::move(slot));
  return children_.back().get();
}

// ------------------------------------------------------------------ traversal

void Module::collect_parameters(const std::string& prefix,
                                std::vector<std::pair<std::string, Variable>>& out) const {
  for (const Entry& e : parameters_) out.emplace_back(join_name(prefix, e.name), e.var);
  for (const auto& c : children_) c->module->collect_parameters(join_name(prefix, c->name), out);
}

void Module::collect_buffers(const std::string& prefix, bool persistent_only,
                             std::vector<std::pair<std::string, Variable>>& out) const {
  for (const Entry& e : buffers_)
    if (e.persistent || !persistent_only) out.emplace_back(join_name(prefix, e.name), e.var);
  for (const auto& c : children_) c->module->collect_buffers(join_name(prefix, c->name), persistent_only, out);
}

void Module::collect_modules(const std::string& prefix,
                             std::vector<std::pair<std::string, std::shared_ptr<const Module>>>& out) const {
  for (const auto& c : children_) {
    std::string name = join_name(prefix, c->name);
    out.emplace_back(name, c->module);
    c->module->collect_modules(name, out);
  }
}

std::vector<std::pair<std::string, Variable>> Module::named_parameters(bool trainable_only) const {
  std::vector<std::pair<std::string, Variable>> all;
  collect_parameters("", all);
  std::vector<std::pair<std::string, Variable>> out;
  std::unordered_set<const VariableImpl*> seen;
  for (auto& [name, v] : all) {
    if (!seen.insert(v.impl().get()).second) continue;
    if (trainable_only && !v.requires_grad()) continue;
    out.emplace_back(std::move(name), v);
  }
  return out;
}

std::vector<Variable> Module::parameters(bool trainable_only) const {
  std::vector<Variable> out;
  for (auto& [name, v] : named_parameters(trainable_only)) out.push_back(v);
  return out;
}

std::vector<std::pair<std::string, Variable>> Module::named_buffers() const {
  std::vector<std::pair<std::string, Variable>> out;
  collect_buffers("", false, out);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<Module>>> Module::named_children() const {
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> out;
  for (const auto& c : children_) out.emplace_back(c->name, c->module);
  return out;
}

std::vector<std::pair<std::string, std::shared_ptr<const Module>>> Module::named_modules() const {
  // The root is handed out without ownership: the caller holds it already.
  std::vector<std::pair<std::string, std::shared_ptr<const Module>>> out;
  out.emplace_back("", std::shared_ptr<const Module>(std::shared_ptr<const Module>(), this));
  collect_modules("", out);
  return out;
}

int64_t Module::num_parameters(bool trainable_only) const {
  int64_t n = 0;
  for (const auto& [name, v] : named_parameters(trainable_only)) n += v.numel();
  return n;
}

std::shared_ptr<Module> Module::find_module(const std::string& path) const {
  const Module* current = this;
  std::shared_ptr<Module> found;
  for (const std::string& part : split_path(path)) {
    found = nullptr;
    for (const auto& c : current->children_)
      if (c->name == part) found = c->module;
    if (!found) return nullptr;
    current = found.get();
  }
  return found;
}

std::shared_ptr<Module> Module::module_at(const std::string& path) const {
  const Module* current = this;
  std::shared_ptr<Module> found;
  std::string walked;
  for (const std::string& part : split_path(path)) {
    found = nullptr;
    for (const auto& c : current->children_)
      if (c->name == part) found = c->module;
    if (!found) {
      std::vector<std::string> names;
      for (const auto& c : current->children_) names.push_back(c->name);
      throw Error(fmt::format("{}: no module '{}' in '{}' ({}; children: [{}])", type_name_, path,
                              walked.empty() ? "<root>" : walked, current->type_name_, fmt::join(names, ", ")));
    }
    walked = join_name(walked, part);
    current = found.get();
  }
  return found;
}

std::shared_ptr<Module> Module::replace_child(const std::string& name, std::shared_ptr<Module> replacement) {
  MLR_CHECK(replacement != nullptr, "{}: replace_child('{}'): the replacement is null", type_name_, name);
  for (auto& c : children_) {
    if (c->name != name) continue;
    MLR_CHECK(c->accepts(*replacement), "{}: replace_child('{}'): a {} cannot take the place of a {} (the slot "
              "needs that type or a subclass)", type_name_, name, replacement->type_name(), c->required_type);
    std::shared_ptr<Module> old = std::move(c->module);
    c->module = std::move(replacement);
    return old;
  }
  std::vector<std::string> names;
  for (const auto& c : children_) names.push_back(c->name);
  throw Error(fmt::format("{}: replace_child: no child named '{}' (children: [{}])", type_name_, name,
                          fmt::join(names, ", ")));
}

std::shared_ptr<Module> Module::replace_module(const std::string& path, std::shared_ptr<Module> replacement) {
  size_t dot = path.rfind('.');
  if (dot == std::string::npos) return replace_child(path, std::move(replacement));
  return module_at(path.substr(0, dot))->replace_child(path.substr(dot + 1), std::move(replacement));
}

// ------------------------------------------------------------------ modes and placement

void Module::train(bool on) {
  training_ = on;
  for (auto& c : children_) c->module->train(on);
}

void Module::to(Device device, std::optional<DType> dtype) {
  auto move = [&](Variable& v) {
    const Tensor& t = v.data();
    DType target = (dtype && t.is_floating_point()) ? *dtype : t.dtype();
    if (t.device() != device || t.dtype() != target) v.set_data(t.to(device, target));
    v.zero_grad(true);
  };
  for (Entry& e : parameters_) move(e.var);
  for (Entry& e : buffers_) move(e.var);
  for (auto& c : children_) c->module->to(device, dtype);
}

void Module::to(DType dtype) {
  // Each tensor stays where it is; only the dtype changes.
  auto convert = [&](Variable& v) {
    if (v.data().is_floating_point() && v.dtype() != dtype) v.set_data(v.data().to(dtype));
    v.zero_grad(true);
  };
  for (Entry& e : parameters_) convert(e.var);
  for (Entry& e : buffers_) convert(e.var);
  for (auto& c : children_) c->module->to(dtype);
}

void Module::requires_grad_(bool requires_grad) {
  for (auto& [name, v] : named_parameters()) v.set_requires_grad(requires_grad && v.data().is_floating_point());
}

void Module::zero_grad(bool set_to_none) {
  for (auto& [name, v] : named_parameters()) v.zero_grad(set_to_none);
}

// ------------------------------------------------------------------ state dict

std::vector<std::pair<std::string, Tensor>> Module::ordered_state_dict() const {
  std::vector<std::pair<std::string, Variable>> vars;
  collect_parameters("", vars);
  collect_buffers("", true, vars);
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(vars.size());
  for (auto& [name, v] : vars) out.emplace_back(name, v.data());
  return out;
}

std::map<std::string, Tensor> Module::state_dict() const {
  std::map<std::string, Tensor> out;
  for (auto& [name, t] : ordered_state_dict()) out.emplace(name, t);
  return out;
}

LoadStateDictResult Module::load_state_dict(const std::map<std::string, Tensor>& state, bool strict) {
  std::vector<std::pair<std::string, Variable>> targets;
  collect_parameters("", targets);
  collect_buffers("", true, targets);

  LoadStateDictResult result;
  std::vector<std::string> mis_shaped;
  std::set<std::string> expected;
  for (const auto& [name, v] : targets) {
    expected.insert(name);
    auto it = state.find(name);
    if (it == state.end()) {
      result.missing_keys.push_back(name);
      continue;
    }
    MLR_CHECK(it->second.defined(), "load_state_dict: tensor '{}' is undefined", name);
    if (it->second.shape() != v.shape())
      mis_shaped.push_back(fmt::format("{} (checkpoint {}, model {})", name, shape_str(it->second.shape()),
                                       shape_str(v.shape())));
  }
  for (const auto& [name, t] : state)
    if (!expected.count(name)) result.unexpected_keys.push_back(name);

  const bool fail = !mis_shaped.empty() || (strict && (!result.missing_keys.empty() || !result.unexpected_keys.empty()));
  if (fail) {
    std::string msg = fmt::format("load_state_dict ({}):", type_name_);
    auto section = [&](const char* title, const std::vector<std::string>& names) {
      if (names.empty()) return;
      msg += fmt::format("\n  {} {}: {}", names.size(), title, fmt::join(names, ", "));
    };
    if (strict) {
      section("missing", result.missing_keys);
      section("unexpected", result.unexpected_keys);
    }
    section("with the wrong shape", mis_shaped);
    throw Error(msg);
  }

  for (auto& [name, v] : targets) {
    auto it = state.find(name);
    if (it == state.end()) continue;
    // copy_ converts dtype and device; the parameter keeps its storage (adapters may share it).
    Tensor dst = v.data();
    dst.copy_(it->second);
  }
  return result;
}

// ------------------------------------------------------------------ printing

void Module::append_tree(const std::string& name, int depth, std::string& out) const {
  out += std::string(static_cast<size_t>(depth) * 2, ' ');
  if (!name.empty()) out += "(" + name + "): ";
  out += type_name_;
  std::string extra = extra_repr();
  if (!extra.empty()) out += "(" + extra + ")";
  out += "\n";
  for (const Entry& e : parameters_)
    out += fmt::format("{}{} {} {}{}\n", std::string(static_cast<size_t>(depth + 1) * 2, ' '), e.name,
                       shape_str(e.var.shape()), dtype_name(e.var.dtype()),
                       e.var.requires_grad() ? "" : " (frozen)");
  for (const auto& c : children_) c->module->append_tree(c->name, depth + 1, out);
}

std::string Module::to_string() const {
  std::string out;
  append_tree("", 0, out);
  return out;
}

}  // namespace mlr

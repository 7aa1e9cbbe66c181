#include "multilora/inject.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "tensor/error.h"

namespace mlr {
namespace {

// Holds one adapter tensor as a parameter named "weight" ("lora_A" + ".weight").
class AdapterTensorHolder : public Module {
 public:
  AdapterTensorHolder() : Module("AdapterTensor") {}
  void add(const std::string& name, const Variable& v) { register_parameter(name, v); }
};

std::string last_component(const std::string& path) {
  auto dot = path.rfind('.');
  return dot == std::string::npos ? path : path.substr(dot + 1);
}

// Wraps the Linears at `paths` (already validated) with adapters made from `spec`.
std::vector<NamedAdapter> wrap(Module& root, const std::vector<std::string>& paths, const InjectionSpec& spec) {
  // Freeze the model, except adapters injected earlier, which stay as they were.
  std::vector<Variable> earlier;
  for (auto& na : find_adapters(root))
    for (const Variable& p : na.adapter->parameters()) earlier.push_back(p);
  root.requires_grad_(false);
  for (Variable& p : earlier) p.set_requires_grad(true);
  MLR_CHECK(spec.adapter != nullptr, "inject_adapters: the spec has no adapter config");
  Generator gen(spec.seed);
  std::vector<NamedAdapter> out;
  for (size_t i = 0; i < paths.size(); ++i) {
    auto linear = std::dynamic_pointer_cast<Linear>(root.module_at(paths[i]));
    const uint64_t dropout_seed = spec.seed + 1 + i;
    std::unique_ptr<AdaptedLinear> adapter =
        spec.defer_base_weight_reads
            ? spec.adapter->make_adapter_awaiting_base_weight(linear->weight(), linear->bias(), gen, dropout_seed)
            : spec.adapter->make_adapter(linear->weight(), linear->bias(), gen, dropout_seed);
    // The registration's promise: only a type that initialises from the base weight awaits it.
    MLR_CHECK(!spec.defer_base_weight_reads || adapter->awaits_base_weight() == adapter->type().initialises_from_base_weight,
              "inject_adapters: adapter type {} is registered {} initialises_from_base_weight, but its config's "
              "make_adapter_awaiting_base_weight made an adapter that {} await the base weight",
              adapter->type().name, adapter->type().initialises_from_base_weight ? "with" : "without",
              adapter->awaits_base_weight() ? "does" : "does not");
    adapter->set_module_path(paths[i]);
    auto module = std::make_shared<AdapterModule>(linear, std::move(adapter));
    root.replace_module(paths[i], module);
    out.push_back({paths[i], &module->adapter()});
  }
  return out;
}

}  // namespace

AdapterModule::AdapterModule(std::shared_ptr<Linear> base, std::unique_ptr<AdaptedLinear> adapter)
    : UnaryModule("AdapterModule"), base_(std::move(base)), adapter_(std::move(adapter)) {
  MLR_CHECK(base_ && adapter_, "AdapterModule: needs a Linear and an adapter");
  MLR_CHECK(adapter_->base_weight_variable().is_same(base_->weight()),
            "AdapterModule: the adapter must wrap this Linear's own weight");
  Variable w = base_->weight();
  w.set_requires_grad(false);
  register_parameter("weight", w);
  if (base_->has_bias()) {
    Variable b = base_->bias();
    b.set_requires_grad(false);
    register_parameter("bias", b);
  }
  std::map<std::string, std::shared_ptr<AdapterTensorHolder>> holders;
  for (auto& [name, v] : adapter_->named_tensors()) {
    auto dot = name.find('.');
    if (dot != std::string::npos) {
      // "lora_A.weight": child "lora_A" with parameter "weight" (trainable adapter matrices).
      std::string child = name.substr(0, dot);
      auto& h = holders[child];
      if (!h) {
        h = std::make_shared<AdapterTensorHolder>();
        register_module(child, h);
      }
      h->add(name.substr(dot + 1), v);
    } else if (adapter_->is_state(name)) {
      // smora_bias: a buffer, which the adapter then reads through the module's handle.
      adapter_->rebind_state(name, register_buffer(name, v.data()));
    } else {
      register_parameter(name, v);  // multilora_scale: trainable, or a fixed scale as a frozen parameter
    }
  }
}

Variable AdapterModule::forward(const Variable& x) {
  adapter_->train(training());
  return adapter_->forward(x);
}

std::string AdapterModule::extra_repr() const {
  return fmt::format("{}, in={}, out={}, merged={}", adapter_->type().display_name, adapter_->in_features(),
                     adapter_->out_features(), adapter_->merged());
}

int64_t layer_index_of(const std::string& path) {
  std::string p = "." + path + ".";
  auto at = p.find(".layers.");
  if (at == std::string::npos) return -1;
  size_t i = at + 8, j = i;
  while (j < p.size() && std::isdigit(static_cast<unsigned char>(p[j]))) ++j;
  if (j == i || p[j] != '.') return -1;
  return std::stoll(p.substr(i, j - i));
}

std::vector<NamedAdapter> inject_adapters(Module& root, const InjectionSpec& spec) {
  MLR_CHECK(!spec.target_modules.empty(), "inject_adapters: target_modules is empty");
  std::set<std::string> targets(spec.target_modules.begin(), spec.target_modules.end());
  std::set<int64_t> layers(spec.layers_to_transform.begin(), spec.layers_to_transform.end());
  std::vector<std::string> paths;
  std::set<std::string> linear_names, matched_targets;
  for (auto& [path, m] : root.named_modules()) {
    if (path.empty()) continue;
    std::string name = last_component(path);
    const bool adapted = dynamic_cast<const AdapterModule*>(m.get()) != nullptr;
    if (!adapted && !dynamic_cast<const Linear*>(m.get())) continue;
    linear_names.insert(name);
    if (!targets.count(name)) continue;
    if (!layers.empty() && !layers.count(layer_index_of(path))) continue;
    MLR_CHECK(!adapted, "inject_adapters: '{}' already has an adapter", path);
    paths.push_back(path);
    matched_targets.insert(name);
  }
  std::vector<std::string> unmatched;
  for (const std::string& t : targets)
    if (!linear_names.count(t)) unmatched.push_back(t);
  MLR_CHECK(unmatched.empty(), "inject_adapters: target modules {} match no Linear of the model (its Linear names: {})",
            unmatched, std::vector<std::string>(linear_names.begin(), linear_names.end()));
  MLR_CHECK(!paths.empty(), "inject_adapters: no module named {} in layers {}", spec.target_modules,
            spec.layers_to_transform);
  return wrap(root, paths, spec);
}

std::vector<NamedAdapter> inject_adapter_from_file(Module& root, const std::string& dir) {
  AdapterFile file = read_adapter_file(dir);
  InjectionSpec spec;
  spec.adapter = adapter_type_of_file(file.config).from_json(file.config);
  std::vector<std::string> paths = adapter_module_paths(file);
  MLR_CHECK(!paths.empty(), "adapter: {} holds no <module>.lora_A.weight / .lora_B.weight tensors", dir);
  std::vector<std::string> problems;
  for (const std::string& p : paths) {
    auto m = root.find_module(p);
    if (!m) problems.push_back(fmt::format("'{}' is not a module of the model", p));
    else if (!std::dynamic_pointer_cast<Linear>(m))
      problems.push_back(fmt::format("'{}' is a {}, not a Linear", p, m->type_name()));
  }
  if (!problems.empty()) {
    std::string msg = fmt::format("adapter: {} does not fit the model:", dir);
    for (const std::string& p : problems) msg += "\n  " + p;
    throw Error(msg);
  }
  std::vector<NamedAdapter> adapters = wrap(root, paths, spec);
  load_adapter(dir, adapters);
  return adapters;
}

std::vector<NamedAdapter> find_adapters(const Module& root) {
  std::vector<NamedAdapter> out;
  for (auto& [path, m] : root.named_modules())
    if (auto* a = dynamic_cast<const AdapterModule*>(m.get())) out.push_back({path, &a->adapter()});
  return out;
}

void merge_adapters(const Module& root) {
  for (auto& na : find_adapters(root))
    if (!na.adapter->merged()) na.adapter->merge();
}

void unmerge_adapters(const Module& root) {
  for (auto& na : find_adapters(root))
    if (na.adapter->merged()) na.adapter->unmerge();
}

std::vector<std::pair<std::string, Tensor>> merged_base_state_dict(const Module& root) {
  std::set<std::string> adapter_keys;
  for (auto& na : find_adapters(root)) {
    MLR_CHECK(na.adapter->merged(), "merged_base_state_dict: the adapter at '{}' is not merged", na.module_path);
    for (auto& [name, v] : na.adapter->named_tensors()) adapter_keys.insert(na.module_path + "." + name);
  }
  std::vector<std::pair<std::string, Tensor>> out;
  for (auto& [name, t] : root.ordered_state_dict())
    if (!adapter_keys.count(name)) out.emplace_back(name, t);
  return out;
}

}  // namespace mlr

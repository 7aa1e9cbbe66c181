// The adapter registry: an adapter type is one class deriving AdaptedLinear, its config class
// deriving AdapterConfig, and one AdapterType registration, which says
//   - its name (YAML `adapter.type`) and which adapter_config.json files it reads (PEFT's peft_type,
//     and for DoRA use_dora),
//   - how it reads its hyperparameters from the run configuration's adapter section and from
//     adapter_config.json (the adapter writes them back with config_json()),
//   - which of those fields must agree between a file and the adapters it loads into.
// The adapter class itself provides construction around a frozen linear layer (through its config's
// make_adapter), its tensors in adapter files (named_tensors) and the hooks the trainer calls
// (AdaptedLinear: after_optimizer_step, training_state, step_metrics). Nothing outside the type's own
// files names a concrete adapter: injection, adapter files, the trainer and the programs go through
// this registry.
//
// Adding a type: write its class and config (multilora/dora.h is the example), define its
// AdapterType next to them, and list it once in registry.cpp's adapter_types(). A program using the
// library registers a type of its own with register_adapter_type before loading a configuration or
// an adapter file (examples/custom_adapter/ does).
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "multilora/adapter.h"
#include "tensor/error.h"

namespace mlr {

// Typed reads from the adapter section of a run configuration (train/config.cpp implements it over
// YAML). Each read leaves `out` unchanged when the key is absent; every error names the file, the
// line and the dotted key.
class ConfigFields {
 public:
  virtual ~ConfigFields() = default;
  virtual void integer(const std::string& key, int64_t& out) const = 0;
  virtual void number(const std::string& key, double& out) const = 0;
  virtual void boolean(const std::string& key, bool& out) const = 0;
  virtual void str(const std::string& key, std::string& out) const = 0;
  virtual void integers(const std::string& key, std::vector<int64_t>& out) const = 0;
  // Throws unless `value` (read from `key`) is one of `allowed`.
  virtual void one_of(const std::string& key, const std::string& value, const std::set<std::string>& allowed) const = 0;
  // Throws "'adapter.<key>' <what>" at the key's position unless ok.
  virtual void require(bool ok, const std::string& key, const std::string& what) const = 0;
};

struct AdapterType;

// The hyperparameters of one adapter type: inject_adapters builds every adapter of a model from one.
class AdapterConfig {
 public:
  virtual ~AdapterConfig() = default;
  virtual const AdapterType& type() const = 0;
  // An adapter around the frozen `weight` [out, in] (and bias), initial values drawn from `init`,
  // dropout masks from a Philox stream seeded with `dropout_seed`.
  virtual std::unique_ptr<AdaptedLinear> make_adapter(Variable weight, Variable bias, Generator& init,
                                                      uint64_t dropout_seed) const = 0;
  // make_adapter without reading the values of `weight`, which may have none yet (a sharded base):
  // an adapter of a type that initialises_from_base_weight then awaits
  // AdaptedLinear::init_from_base_weight (or load_adapter); draws the same values from `init`.
  // Types that read nothing of the weight when made need not override it.
  virtual std::unique_ptr<AdaptedLinear> make_adapter_awaiting_base_weight(Variable weight, Variable bias,
                                                                           Generator& init,
                                                                           uint64_t dropout_seed) const {
    return make_adapter(std::move(weight), std::move(bias), init, dropout_seed);
  }
  // The adapter-section keys this config resolves to (the resolved YAML writes them back; reading
  // them with the type's from_yaml gives the same config).
  virtual nlohmann::json yaml_fields() const = 0;
};

struct AdapterType {
  std::string name;          // YAML adapter.type, lower case: "lora"
  std::string display_name;  // in messages: "LoRA"
  std::string peft_type;     // adapter_config.json's peft_type: "LORA"
  // Whether an adapter_config.json is of this type (default: its peft_type matches).
  std::function<bool(const nlohmann::json&)> reads_file;
  std::function<std::shared_ptr<const AdapterConfig>(const nlohmann::json&)> from_json;
  // The adapter-section keys it reads besides the common ones (type, target_modules, layers,
  // init_from), and the reader; absent keys keep the run configuration's defaults.
  std::vector<std::string> yaml_keys;
  std::function<std::shared_ptr<const AdapterConfig>(const ConfigFields&)> from_yaml;
  // The adapter_config.json fields two adapters (or a file and an adapter) must agree on to hold
  // tensors of the same shapes computing the same function; training-only fields (dropout, init)
  // may differ.
  std::vector<std::string> structural_fields;
  // Whether an adapter's initial values are computed from the frozen weight's values (DoRA's
  // magnitude starts at the weight's row norms). Such a type's config overrides
  // make_adapter_awaiting_base_weight, and its adapter implements init_from_base_weight (the
  // computation): on a base whose weights have no values yet (dist/sharded_base.h,
  // train.shard_frozen_base) the adapters are made awaiting them (InjectionSpec::
  // defer_base_weight_reads) and initialised one decoder layer at a time while it is gathered, or
  // given their values by an adapter file (load_adapter). The trainer does both for any such type.
  bool initialises_from_base_weight = false;
};

// Every registered type, in registration order (LoRA first).
const std::vector<const AdapterType*>& adapter_types();
// Adds `type` (which must outlive every use of the registry) after the built-in ones; throws when
// its name is taken or it lacks a reader. Files are matched in registration order, so a type whose
// files share a peft_type with an earlier one needs a reads_file that the earlier type refuses.
// Not thread-safe: register before any other use.
void register_adapter_type(const AdapterType& type);
// The type named `name` (YAML adapter.type); throws listing the names.
const AdapterType& adapter_type(const std::string& name);
// The type of an adapter_config.json object; throws naming the peft_type and the known ones.
const AdapterType& adapter_type_of_file(const nlohmann::json& config);
// The union of every type's yaml_keys (a run configuration may carry keys of other types, so that
// `adapter.type=lora` on the command line works on a MultiLoRA file).
std::set<std::string> adapter_yaml_keys();

// ---- adapter_config.json fields, with errors naming the field, its value and what was expected ----
namespace detail {
template <typename T>
struct IsIntegerList : std::false_type {};
template <typename I>
struct IsIntegerList<std::vector<I>> : std::bool_constant<std::is_integral_v<I>> {};
}  // namespace detail

template <typename T>
T json_field(const nlohmann::json& config, const std::string& key, const char* what) {
  MLR_CHECK(config.contains(key), "adapter_config.json: missing field \"{}\" ({})", key, what);
  // The JSON library converts 2.5 or 1e300 to an integer by a cast (truncating, or undefined):
  // integer fields must hold JSON integers.
  const nlohmann::json& v = config.at(key);
  bool integers = true;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) integers = v.is_number_integer();
  if constexpr (detail::IsIntegerList<T>::value)
    integers = !v.is_array() || std::all_of(v.begin(), v.end(), [](const nlohmann::json& e) { return e.is_number_integer(); });
  MLR_CHECK(integers, "adapter_config.json: field \"{}\" is {}, expected {}", key, v.dump(), what);
  try {
    return v.get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(fmt::format("adapter_config.json: field \"{}\" is {}, expected {}", key, v.dump(), what));
  }
}
template <typename T>
T json_field_or(const nlohmann::json& config, const std::string& key, T fallback, const char* what) {
  if (!config.contains(key) || config.at(key).is_null()) return fallback;
  return json_field<T>(config, key, what);
}
// A whole number as a JSON integer (PEFT writes "lora_alpha": 8), anything else as a double.
nlohmann::json json_number(double v);
// Whether the file's peft_type is `peft_type`.
bool json_peft_type_is(const nlohmann::json& config, const std::string& peft_type);

}  // namespace mlr

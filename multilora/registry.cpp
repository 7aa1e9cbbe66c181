#include "multilora/registry.h"

#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>

#include "multilora/dora.h"
#include "multilora/lora.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"

namespace mlr {

namespace {

// The built-in types are listed explicitly rather than filled by static initialisers in each type's
// file: the library is static, and the linker drops an object file nothing refers to, registration
// and all. Types of other programs join through register_adapter_type.
std::vector<const AdapterType*>& registered_types() {
  static std::vector<const AdapterType*> types = {&lora_adapter_type(), &multilora_adapter_type(),
                                                  &smora_adapter_type(), &dora_adapter_type()};
  return types;
}

}  // namespace

const std::vector<const AdapterType*>& adapter_types() { return registered_types(); }

void register_adapter_type(const AdapterType& type) {
  MLR_CHECK(!type.name.empty() && type.name != "full",
            "register_adapter_type: the name must be non-empty and not \"full\" (full fine-tuning), got \"{}\"",
            type.name);
  MLR_CHECK(type.from_json && type.from_yaml, "register_adapter_type: type \"{}\" needs from_json and from_yaml",
            type.name);
  MLR_CHECK(!type.peft_type.empty() || type.reads_file,
            "register_adapter_type: type \"{}\" needs a peft_type or a reads_file test", type.name);
  for (const AdapterType* t : registered_types()) {
    if (t == &type) return;  // registering the same object twice is harmless
    MLR_CHECK(t->name != type.name, "register_adapter_type: a type named \"{}\" is already registered", type.name);
  }
  registered_types().push_back(&type);
}

const AdapterType& adapter_type(const std::string& name) {
  std::vector<std::string> names;
  for (const AdapterType* t : adapter_types()) {
    if (t->name == name) return *t;
    names.push_back(t->name);
  }
  throw Error(fmt::format("adapter type \"{}\" is not one of {}", name, fmt::join(names, ", ")));
}

const AdapterType& adapter_type_of_file(const nlohmann::json& config) {
  const std::string peft_type = json_field<std::string>(config, "peft_type", "a string");
  std::vector<std::string> known;
  for (const AdapterType* t : adapter_types()) {
    if (t->reads_file ? t->reads_file(config) : t->peft_type == peft_type) return *t;
    if (std::find(known.begin(), known.end(), t->peft_type) == known.end()) known.push_back(t->peft_type);
  }
  throw Error(fmt::format("adapter_config.json: peft_type \"{}\" is not one of {}", peft_type, fmt::join(known, ", ")));
}

std::set<std::string> adapter_yaml_keys() {
  std::set<std::string> keys;
  for (const AdapterType* t : adapter_types()) keys.insert(t->yaml_keys.begin(), t->yaml_keys.end());
  return keys;
}

nlohmann::json json_number(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return static_cast<int64_t>(v);
  return v;
}

bool json_peft_type_is(const nlohmann::json& config, const std::string& peft_type) {
  return config.contains("peft_type") && config.at("peft_type").is_string() &&
         config.at("peft_type").get<std::string>() == peft_type;
}

}  // namespace mlr

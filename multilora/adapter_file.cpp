#include "multilora/adapter_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>

#include "base/atomic_file.h"
#include "llama/safetensors.h"
#include "multilora/registry.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mlr {
namespace {

constexpr const char* kKeyPrefix = "base_model.model.";

// JSON numbers compare by value (8 and 8.0 are the same alpha).
bool json_equal(const json& a, const json& b) {
  if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
  if (a.is_array() && b.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!json_equal(a[i], b[i])) return false;
    return true;
  }
  return a == b;
}

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  MLR_CHECK(in.good(), "adapter: cannot open {}", p.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json file_config_of(const std::vector<NamedAdapter>& adapters, const AdapterSaveOptions& options) {
  MLR_CHECK(!adapters.empty(), "save_adapter: no adapters to save");
  MLR_CHECK(adapters.front().adapter != nullptr, "save_adapter: adapter for '{}' is null", adapters.front().module_path);
  const AdapterType& type = adapters.front().adapter->type();
  json config = adapters.front().adapter->config_json();
  std::set<std::string> targets, paths;
  for (const NamedAdapter& na : adapters) {
    MLR_CHECK(na.adapter != nullptr, "save_adapter: adapter for '{}' is null", na.module_path);
    MLR_CHECK(!na.module_path.empty(), "save_adapter: an adapter has an empty module path");
    MLR_CHECK(paths.insert(na.module_path).second, "save_adapter: module path '{}' appears twice", na.module_path);
    MLR_CHECK(&na.adapter->type() == &type, "save_adapter: '{}' is a {} adapter but '{}' is {}; one file holds one type",
              na.module_path, na.adapter->type().display_name, adapters.front().module_path, type.display_name);
    json c = na.adapter->config_json();
    for (const std::string& f : type.structural_fields) {
      bool same = c.contains(f) == config.contains(f) && (!c.contains(f) || json_equal(c.at(f), config.at(f)));
      MLR_CHECK(same, "save_adapter: '{}' has {} = {} but '{}' has {}; one adapter_config.json cannot describe both",
                na.module_path, f, c.value(f, json()).dump(), adapters.front().module_path,
                config.value(f, json()).dump());
    }
    auto dot = na.module_path.rfind('.');
    targets.insert(dot == std::string::npos ? na.module_path : na.module_path.substr(dot + 1));
  }
  config["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  config["base_model_name_or_path"] =
      options.base_model_name_or_path.empty() ? json() : json(options.base_model_name_or_path);
  config["task_type"] = options.task_type.empty() ? json() : json(options.task_type);
  // The LoraConfig fields PEFT expects (its defaults) where the type does not set them, so PEFT's
  // from_pretrained loads a LORA file.
  const json peft_defaults = {{"bias", "none"},
                              {"fan_in_fan_out", false},
                              {"inference_mode", true},
                              {"init_lora_weights", true},
                              {"modules_to_save", nullptr},
                              {"layers_to_transform", nullptr},
                              {"layers_pattern", nullptr},
                              {"rank_pattern", json::object()},
                              {"alpha_pattern", json::object()},
                              {"use_dora", false},
                              {"revision", nullptr}};
  for (auto& [key, value] : peft_defaults.items())
    if (!config.contains(key)) config[key] = value;
  return config;
}

}  // namespace

std::string adapter_tensor_key(const std::string& module_path, const std::string& tensor_name) {
  return kKeyPrefix + module_path + "." + tensor_name;
}

void save_adapter(const std::string& dir, const std::vector<NamedAdapter>& adapters, const AdapterSaveOptions& options) {
  json config = file_config_of(adapters, options);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const NamedAdapter& na : adapters) {
    MLR_CHECK(!na.adapter->awaits_base_weight(), "save_adapter: {}: the {} still awaits its initial values from the "
              "base weight (init_from_base_weight)", dir, na.adapter->describe());
  }
  for (const NamedAdapter& na : adapters)
    for (auto& [name, v] : na.adapter->named_tensors())
      tensors.emplace_back(adapter_tensor_key(na.module_path, name), v.data().cpu().contiguous());
  std::error_code ec;
  fs::create_directories(dir, ec);
  MLR_CHECK(!ec, "save_adapter: cannot create directory {}: {}", dir, ec.message());
  save_safetensors((fs::path(dir) / kAdapterWeightsFile).string(), tensors, {{"format", "pt"}});
  atomic_write_file(fs::path(dir) / kAdapterConfigFile, config.dump(2) + "\n");
}

AdapterFile read_adapter_file(const std::string& dir) {
  fs::path cfg = fs::path(dir) / kAdapterConfigFile, weights = fs::path(dir) / kAdapterWeightsFile;
  MLR_CHECK(fs::exists(cfg), "adapter: {} not found (is {} an adapter directory?)", cfg.string(), dir);
  MLR_CHECK(fs::exists(weights), "adapter: {} not found", weights.string());
  AdapterFile file;
  std::string text = slurp(cfg);
  try {
    file.config = json::parse(text);
  } catch (const json::parse_error& e) {
    throw Error(fmt::format("adapter: {}: invalid JSON at byte {}: {}", cfg.string(), e.byte, e.what()));
  // A number too large for a double ("1e999") is not a parse_error but out_of_range.
  } catch (const json::exception& e) {
    throw Error(fmt::format("adapter: {}: invalid JSON: {}", cfg.string(), e.what()));
  }
  MLR_CHECK(file.config.is_object(), "adapter: {}: expected a JSON object, got {}", cfg.string(),
            file.config.type_name());
  try {
    adapter_type_of_file(file.config);
    for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
      if (file.config.contains(pattern) && !file.config.at(pattern).is_null())
        MLR_CHECK(file.config.at(pattern).is_object() && file.config.at(pattern).empty(),
                  "{} = {} is not supported: every module must share r and lora_alpha", pattern,
                  file.config.at(pattern).dump());
    }
    if (file.config.contains("bias") && file.config.at("bias").is_string())
      MLR_CHECK(file.config.at("bias").get<std::string>() == "none",
                "bias = \"{}\" is not supported (only \"none\": base biases stay frozen)",
                file.config.at("bias").get<std::string>());
  } catch (const Error& e) {
    throw Error(fmt::format("adapter: {}: {}", cfg.string(), std::string(e.what()).substr(5)));
  }
  SafetensorsFile st = SafetensorsFile::open(weights.string());
  for (const std::string& name : st.names()) file.tensors[name] = st.get(name);
  return file;
}

std::vector<std::string> adapter_module_paths(const AdapterFile& file) {
  std::set<std::string> paths;
  const std::string prefix = kKeyPrefix;
  for (auto& [key, t] : file.tensors) {
    if (key.rfind(prefix, 0) != 0) continue;
    for (const char* suffix : {".lora_A.weight", ".lora_B.weight"}) {
      std::string s = suffix;
      if (key.size() > prefix.size() + s.size() && key.compare(key.size() - s.size(), s.size(), s) == 0)
        paths.insert(key.substr(prefix.size(), key.size() - prefix.size() - s.size()));
    }
  }
  return {paths.begin(), paths.end()};
}

void load_adapter(const std::string& dir, const std::vector<NamedAdapter>& adapters) {
  AdapterFile file = read_adapter_file(dir);
  std::vector<std::string> problems;
  // Hyperparameters: every adapter's structural fields against the file's.
  std::set<std::string> reported;
  for (const NamedAdapter& na : adapters) {
    MLR_CHECK(na.adapter != nullptr, "load_adapter: adapter for '{}' is null", na.module_path);
    json c = na.adapter->config_json();
    for (const std::string& f : na.adapter->type().structural_fields) {
      if (!c.contains(f)) continue;
      json want = c.at(f);
      json have = file.config.contains(f) ? file.config.at(f) : json();
      if (have.is_null() && want.is_boolean()) have = false;  // PEFT's default for its flags (use_rslora, use_dora)
      if (!json_equal(want, have) && reported.insert(f).second)
        problems.push_back(fmt::format("config field \"{}\" is {} in the file, {} in the model ('{}')", f,
                                       have.dump(), want.dump(), na.module_path));
    }
  }
  // Tensors: exact key set and shapes.
  std::map<std::string, Variable> expected;
  for (const NamedAdapter& na : adapters)
    for (auto& [name, v] : na.adapter->named_tensors()) expected[adapter_tensor_key(na.module_path, name)] = v;
  for (auto& [key, v] : expected) {
    auto it = file.tensors.find(key);
    if (it == file.tensors.end()) {
      problems.push_back(fmt::format("missing tensor '{}' (expected shape {})", key, shape_str(v.shape())));
    } else if (it->second.shape() != v.shape()) {
      problems.push_back(fmt::format("tensor '{}' has shape {} in the file, {} in the model", key,
                                     shape_str(it->second.shape()), shape_str(v.shape())));
    } else if (!it->second.is_floating_point()) {
      problems.push_back(fmt::format("tensor '{}' has dtype {}, expected floating point", key,
                                     dtype_name(it->second.dtype())));
    }
  }
  for (auto& [key, t] : file.tensors)
    if (!expected.count(key)) problems.push_back(fmt::format("unexpected tensor '{}' {}", key, shape_str(t.shape())));
  if (!problems.empty()) {
    std::string msg = fmt::format("adapter: {} does not match the model ({} problem{}):", dir, problems.size(),
                                  problems.size() == 1 ? "" : "s");
    for (const std::string& p : problems) msg += "\n  " + p;
    throw Error(msg);
  }
  for (auto& [key, v] : expected) {
    Tensor dst = v.data();
    dst.copy_(file.tensors.at(key));
  }
  for (const NamedAdapter& na : adapters) na.adapter->values_loaded();  // nothing awaits the base weight
}

}  // namespace mlr

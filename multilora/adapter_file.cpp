#include "multilora/adapter_file.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <type_traits>

#include "llama/safetensors.h"
#include "tensor/error.h"
#include "tensor/ops.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace mlr {
namespace {

constexpr const char* kKeyPrefix = "base_model.model.";

// The structural fields: two adapters (or a file and an adapter) agreeing on these hold tensors of
// the same shapes and compute the same function. Training-only fields (dropout, init, learnable
// scale, bias update rate) may differ.
const std::vector<std::string>& structural_fields() {
  static const std::vector<std::string> fields = {"peft_type", "r",     "lora_alpha", "use_rslora",  "n_modules",
                                                  "ranks",     "scale_mode", "top_k", "gate_scale", "score_function"};
  return fields;
}

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

// A whole number stays an integer in JSON (PEFT writes "lora_alpha": 8).
json number(double v) {
  if (std::floor(v) == v && std::fabs(v) < 1e15) return static_cast<int64_t>(v);
  return v;
}

template <typename T>
struct IsIntegerList : std::false_type {};
template <typename I>
struct IsIntegerList<std::vector<I>> : std::bool_constant<std::is_integral_v<I>> {};

template <typename T>
T get_field(const json& config, const std::string& key, const char* what) {
  MLR_CHECK(config.contains(key), "adapter_config.json: missing field \"{}\" ({})", key, what);
  // The JSON library converts 2.5 or 1e300 to an integer by a cast (truncating, or undefined).
  const json& v = config.at(key);
  bool integers = true;
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) integers = v.is_number_integer();
  if constexpr (IsIntegerList<T>::value)
    integers = !v.is_array() || std::all_of(v.begin(), v.end(), [](const json& e) { return e.is_number_integer(); });
  MLR_CHECK(integers, "adapter_config.json: field \"{}\" is {}, expected {}", key, v.dump(), what);
  try {
    return config.at(key).get<T>();
  } catch (const json::exception&) {
    throw Error(fmt::format("adapter_config.json: field \"{}\" is {}, expected {}", key, config.at(key).dump(), what));
  }
}

template <typename T>
T get_field_or(const json& config, const std::string& key, T fallback, const char* what) {
  if (!config.contains(key) || config.at(key).is_null()) return fallback;
  return get_field<T>(config, key, what);
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
  json config = adapters.front().adapter->config_json();
  std::set<std::string> targets, paths;
  for (const NamedAdapter& na : adapters) {
    MLR_CHECK(na.adapter != nullptr, "save_adapter: adapter for '{}' is null", na.module_path);
    MLR_CHECK(!na.module_path.empty(), "save_adapter: an adapter has an empty module path");
    MLR_CHECK(paths.insert(na.module_path).second, "save_adapter: module path '{}' appears twice", na.module_path);
    json c = na.adapter->config_json();
    for (const std::string& f : structural_fields()) {
      bool same = c.contains(f) == config.contains(f) && (!c.contains(f) || json_equal(c.at(f), config.at(f)));
      MLR_CHECK(same, "save_adapter: '{}' has {} = {} but '{}' has {}; one adapter_config.json cannot describe both",
                na.module_path, f, c.value(f, json()).dump(), adapters.front().module_path,
                config.value(f, json()).dump());
    }
    auto dot = na.module_path.rfind('.');
    targets.insert(dot == std::string::npos ? na.module_path : na.module_path.substr(dot + 1));
  }
  config["lora_alpha"] = number(config.at("lora_alpha").get<double>());
  if (config.contains("gate_scale")) config["gate_scale"] = number(config.at("gate_scale").get<double>());
  // The LoraConfig fields PEFT expects (its defaults), so PEFT's from_pretrained loads a LORA file.
  config["target_modules"] = std::vector<std::string>(targets.begin(), targets.end());
  config["base_model_name_or_path"] =
      options.base_model_name_or_path.empty() ? json() : json(options.base_model_name_or_path);
  config["task_type"] = options.task_type.empty() ? json() : json(options.task_type);
  config["bias"] = "none";
  config["fan_in_fan_out"] = false;
  config["inference_mode"] = true;
  config["init_lora_weights"] = true;
  config["modules_to_save"] = nullptr;
  config["layers_to_transform"] = nullptr;
  config["layers_pattern"] = nullptr;
  config["rank_pattern"] = json::object();
  config["alpha_pattern"] = json::object();
  config["use_dora"] = false;
  config["revision"] = nullptr;
  return config;
}

}  // namespace

std::string adapter_tensor_key(const std::string& module_path, const std::string& tensor_name) {
  return kKeyPrefix + module_path + "." + tensor_name;
}

void save_adapter(const std::string& dir, const std::vector<NamedAdapter>& adapters, const AdapterSaveOptions& options) {
  json config = file_config_of(adapters, options);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const NamedAdapter& na : adapters)
    for (auto& [name, v] : na.adapter->named_tensors())
      tensors.emplace_back(adapter_tensor_key(na.module_path, name), v.data().cpu().contiguous());
  std::error_code ec;
  fs::create_directories(dir, ec);
  MLR_CHECK(!ec, "save_adapter: cannot create directory {}: {}", dir, ec.message());
  save_safetensors((fs::path(dir) / kAdapterWeightsFile).string(), tensors, {{"format", "pt"}});
  // The config through a temporary and a rename, like the weights, so a crash leaves no half file.
  fs::path cfg = fs::path(dir) / kAdapterConfigFile, tmp = cfg;
  tmp += ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    MLR_CHECK(out.good(), "save_adapter: cannot write {}", tmp.string());
    out << config.dump(2) << "\n";
    out.flush();
    MLR_CHECK(out.good(), "save_adapter: writing {} failed", tmp.string());
  }
  fs::rename(tmp, cfg, ec);
  MLR_CHECK(!ec, "save_adapter: cannot rename {} to {}: {}", tmp.string(), cfg.string(), ec.message());
}

AdapterKind adapter_kind_from_json(const json& config) {
  std::string t = get_field<std::string>(config, "peft_type", "a string");
  if (t == "LORA") return AdapterKind::lora;
  if (t == "MULTILORA") return AdapterKind::multilora;
  if (t == "SMORA") return AdapterKind::smora;
  throw Error(fmt::format("adapter_config.json: peft_type \"{}\" is not one of LORA, MULTILORA, SMORA", t));
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
    adapter_kind_from_json(file.config);
    for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
      if (file.config.contains(pattern) && !file.config.at(pattern).is_null())
        MLR_CHECK(file.config.at(pattern).is_object() && file.config.at(pattern).empty(),
                  "{} = {} is not supported: every module must share r and lora_alpha", pattern,
                  file.config.at(pattern).dump());
    }
    if (file.config.contains("use_dora"))
      MLR_CHECK(!file.config.at("use_dora").is_boolean() || !file.config.at("use_dora").get<bool>(),
                "use_dora = true is not supported (DoRA adds a magnitude vector this engine does not implement)");
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
    for (const std::string& f : structural_fields()) {
      if (!c.contains(f)) continue;
      json want = c.at(f);
      json have = file.config.contains(f) ? file.config.at(f) : json();
      if (f == "use_rslora" && have.is_null()) have = false;  // PEFT's default
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
}

LoraConfig lora_config_from_json(const json& config) {
  MLR_CHECK(adapter_kind_from_json(config) == AdapterKind::lora, "adapter_config.json: peft_type is {}, expected LORA",
            config.at("peft_type").dump());
  LoraConfig c;
  c.r = get_field<int64_t>(config, "r", "a positive integer");
  c.alpha = get_field<double>(config, "lora_alpha", "a number");
  c.dropout = get_field_or<double>(config, "lora_dropout", 0.0, "a number");
  c.use_rslora = get_field_or<bool>(config, "use_rslora", false, "a boolean");
  MLR_CHECK(c.r > 0, "adapter_config.json: r = {} must be positive", c.r);
  return c;
}

MultiLoraConfig multilora_config_from_json(const json& config) {
  MLR_CHECK(adapter_kind_from_json(config) == AdapterKind::multilora,
            "adapter_config.json: peft_type is {}, expected MULTILORA", config.at("peft_type").dump());
  MultiLoraConfig c;
  c.ranks = get_field<std::vector<int64_t>>(config, "ranks", "an array of module ranks");
  c.n_modules = static_cast<int64_t>(c.ranks.size());
  c.r = get_field<int64_t>(config, "r", "a positive integer");
  int64_t total = 0;
  for (int64_t ri : c.ranks) {
    MLR_CHECK(ri > 0 && ri <= INT64_MAX - total, "adapter_config.json: ranks {} must be positive, with a sum that fits 64 bits",
              config.at("ranks").dump());
    total += ri;
  }
  MLR_CHECK(total == c.r, "adapter_config.json: ranks {} sum to {}, but r = {}", config.at("ranks").dump(), total, c.r);
  if (config.contains("n_modules"))
    MLR_CHECK(get_field<int64_t>(config, "n_modules", "an integer") == c.n_modules,
              "adapter_config.json: n_modules = {} but ranks lists {} modules", config.at("n_modules").dump(),
              c.n_modules);
  c.alpha = get_field<double>(config, "lora_alpha", "a number");
  c.dropout = get_field_or<double>(config, "lora_dropout", 0.0, "a number");
  std::string mode = get_field_or<std::string>(config, "scale_mode", "per_module", "\"per_module\" or \"per_channel\"");
  MLR_CHECK(mode == "per_module" || mode == "per_channel",
            "adapter_config.json: scale_mode \"{}\" is not per_module or per_channel", mode);
  c.scale_mode = mode == "per_module" ? MultiLoraScale::per_module : MultiLoraScale::per_channel;
  c.learnable_scale = get_field_or<bool>(config, "learnable_scale", true, "a boolean");
  c.scale_init = get_field_or<double>(config, "scale_init", 0.0, "a number");
  std::string init = get_field_or<std::string>(config, "init", "kaiming_uniform", "\"kaiming_uniform\" or \"gaussian\"");
  MLR_CHECK(init == "kaiming_uniform" || init == "gaussian",
            "adapter_config.json: init \"{}\" is not kaiming_uniform or gaussian", init);
  c.init = init == "gaussian" ? MultiLoraInit::gaussian : MultiLoraInit::kaiming_uniform;
  return c;
}

SmoraConfig smora_config_from_json(const json& config) {
  MLR_CHECK(adapter_kind_from_json(config) == AdapterKind::smora, "adapter_config.json: peft_type is {}, expected SMORA",
            config.at("peft_type").dump());
  SmoraConfig c;
  c.r = get_field<int64_t>(config, "r", "a positive integer");
  c.top_k = get_field<int64_t>(config, "top_k", "a positive integer");
  c.alpha = get_field<double>(config, "lora_alpha", "a number");
  if (config.contains("gate_scale")) c.gate_scale = get_field<double>(config, "gate_scale", "a number");
  std::string score = get_field_or<std::string>(config, "score_function", "sigmoid", "\"sigmoid\" or \"softmax\"");
  MLR_CHECK(score == "sigmoid" || score == "softmax",
            "adapter_config.json: score_function \"{}\" is not sigmoid or softmax", score);
  c.score = score == "softmax" ? SmoraScore::softmax : SmoraScore::sigmoid;
  c.bias_update_rate = get_field_or<double>(config, "bias_update_rate", 1e-5, "a number");
  c.dropout = get_field_or<double>(config, "lora_dropout", 0.0, "a number");
  MLR_CHECK(c.r > 0 && c.top_k >= 1 && c.top_k <= c.r, "adapter_config.json: top_k = {} must be in [1, r = {}]",
            c.top_k, c.r);
  return c;
}

}  // namespace mlr

// mlr-train configuration: YAML + dotted overrides -> TrainConfig, with file:line:key errors.
#include "train/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "base/config_section.h"
#include "tensor/error.h"

namespace mlr {

namespace fs = std::filesystem;

namespace {

// The run config's sections (base/config_section.h): errors start with "config: " and name the
// command-line override a bad value came from.
class Section : public ConfigSection {
 public:
  Section(const YAML::Node& node, const std::string& file, std::string path, const std::set<std::string>& overridden)
      : ConfigSection(node, "config", file, std::move(path), &overridden) {}
};

// Sets root[a][b]... = value for the dotted key of "a.b=value" (value parsed as YAML, so numbers,
// booleans and flow lists like [q_proj,v_proj] keep their types).
void apply_override(YAML::Node& root, const std::string& assignment) {
  const size_t eq = assignment.find('=');
  MLR_CHECK(eq != std::string::npos && eq > 0, "config override \"{}\": expected key=value (e.g. optim.lr=1e-4)",
            assignment);
  const std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string p; std::getline(ss, p, '.');) {
    MLR_CHECK(!p.empty(), "config override \"{}\": empty key component", assignment);
    parts.push_back(p);
  }
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("config override \"{}\": the value is not valid YAML: {}", assignment, e.msg));
  }
  // A document that is a scalar or a list has no keys to set (yaml-cpp would throw BadSubscript).
  MLR_CHECK(root.IsMap(), "config override \"{}\": the configuration is not a mapping of sections", assignment);
  // Walk with fresh handles: yaml-cpp node assignment rebinds, so use reset on copies.
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    YAML::Node parent = chain.back();
    MLR_CHECK(!parent.IsDefined() || parent.IsNull() || parent.IsMap(),
              "config override \"{}\": '{}' is not a mapping", assignment, fmt::join(parts.begin(), parts.begin() + i, "."));
    YAML::Node child = parent[parts[i]];
    if (!child.IsDefined() || child.IsNull()) {
      parent[parts[i]] = YAML::Node(YAML::NodeType::Map);
      child = parent[parts[i]];
    }
    MLR_CHECK(child.IsMap(), "config override \"{}\": '{}' is not a mapping", assignment,
              fmt::join(parts.begin(), parts.begin() + i + 1, "."));
    chain.push_back(child);
  }
  chain.back()[parts.back()] = value;
}

fs::path resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return {};
  const fs::path path(p);
  return path.is_absolute() || base.empty() ? path : base / path;
}

// The adapter section as the adapter registry reads it (multilora/registry.h).
class AdapterFields : public ConfigFields {
 public:
  explicit AdapterFields(const Section& section) : section_(section) {}
  void integer(const std::string& k, int64_t& out) const override { section_.integer(k, out); }
  void number(const std::string& k, double& out) const override { section_.number(k, out); }
  void boolean(const std::string& k, bool& out) const override { section_.boolean(k, out); }
  void str(const std::string& k, std::string& out) const override { section_.str(k, out); }
  void integers(const std::string& k, std::vector<int64_t>& out) const override { section_.list(k, out, "an integer"); }
  void one_of(const std::string& k, const std::string& value, const std::set<std::string>& allowed) const override {
    section_.one_of(k, value, allowed);
  }
  void require(bool ok, const std::string& k, const std::string& what) const override { section_.require(ok, k, what); }

 private:
  const Section& section_;
};

// type, target_modules, layers, init_from, and the type's own keys through its registration.
AdapterSection parse_adapter_section(const Section& adapter, const fs::path& base_dir) {
  std::set<std::string> known = {"type", "target_modules", "layers", "init_from"};
  const std::set<std::string> type_keys = adapter_yaml_keys();
  known.insert(type_keys.begin(), type_keys.end());
  adapter.only(known);
  AdapterSection a;
  adapter.str("type", a.type);
  std::set<std::string> types = {"full"};
  for (const AdapterType* t : adapter_types()) types.insert(t->name);
  adapter.one_of("type", a.type, types);
  adapter.list("target_modules", a.target_modules, "a module name");
  adapter.list("layers", a.layers, "a layer index");
  adapter.str("init_from", a.init_from);
  adapter.require(a.init_from.empty() || a.type != "full", "init_from",
                  "applies to adapters; for full fine-tuning point model.path at the checkpoint to start from");
  a.init_from = resolve(base_dir, a.init_from).string();
  const std::set<std::string> modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (const std::string& m : a.target_modules)
    adapter.require(modules.count(m) > 0, "target_modules",
                    fmt::format("has \"{}\", expected names among {}", m, fmt::join(modules, ", ")));
  adapter.require(a.type == "full" || !a.target_modules.empty(), "target_modules", "is empty");
  for (int64_t l : a.layers) adapter.require(l >= 0, "layers", fmt::format("has a negative index {}", l));
  if (a.type != "full") a.settings = adapter_type(a.type).from_yaml(AdapterFields(adapter));
  return a;
}

// A JSON scalar or array of scalars (an adapter config's yaml_fields) as YAML.
void emit_json_value(YAML::Emitter& out, const nlohmann::json& v) {
  if (v.is_array()) {
    out << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : v) emit_json_value(out, item);
    out << YAML::EndSeq;
  } else if (v.is_boolean()) {
    out << v.get<bool>();
  } else if (v.is_number_integer()) {
    out << v.get<int64_t>();
  } else if (v.is_number()) {
    out << v.get<double>();
  } else if (v.is_string()) {
    out << v.get<std::string>();
  } else {
    out << YAML::Null;
  }
}

void emit_adapter_section(YAML::Emitter& out, const AdapterSection& a) {
  out << YAML::Key << "adapter" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << a.type << YAML::Key << "target_modules" << YAML::Value << YAML::Flow
      << a.target_modules << YAML::Key << "layers" << YAML::Value << YAML::Flow << a.layers << YAML::Key
      << "init_from" << YAML::Value << a.init_from;
  if (a.settings) {
    const nlohmann::json fields = a.settings->yaml_fields();
    for (const auto& [key, value] : fields.items()) {
      out << YAML::Key << key << YAML::Value;
      emit_json_value(out, value);
    }
  }
  out << YAML::EndMap;
}

// Two YAML trees with the same structure, scalars and nulls.
bool same_tree(const YAML::Node& a, const YAML::Node& b) {
  if (a.Type() != b.Type()) return false;
  if (a.IsScalar()) return a.Scalar() == b.Scalar();
  if (a.IsSequence() || a.IsMap()) {
    if (a.size() != b.size()) return false;
    auto ia = a.begin();
    auto ib = b.begin();
    for (; ia != a.end(); ++ia, ++ib) {
      if (a.IsSequence() ? !same_tree(*ia, *ib) : !same_tree(ia->first, ib->first) || !same_tree(ia->second, ib->second))
        return false;
    }
  }
  return true;
}

// A data section kept as YAML text (data/ parses it) and written back by to_yaml. A section that
// does not read back as the same tree is refused here, with the file and line, rather than turning
// into a different section in the run's recorded configuration.
std::string section_as_yaml(const YAML::Node& node, const Section& parent, const std::string& key) {
  parent.require_writable_tree(node, key);
  YAML::Emitter out;
  out << node;
  const std::string text = out.c_str();
  bool same = false;
  try {
    same = out.good() && same_tree(YAML::Load(text), node);
  } catch (const YAML::Exception&) {
  }
  if (!same) parent.fail(node, fmt::format("'{}' cannot be written back as YAML and read as the same section", key));
  return text;
}

TrainConfig parse_fields(const std::string& yaml_text, const std::string& name,
                         const std::vector<std::string>& overrides, const fs::path& base_dir) try {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::ParserException& e) {
    throw Error(fmt::format("config: {}:{}: {}", name, e.mark.line + 1, e.msg));
  }
  if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  std::set<std::string> overridden;
  for (const std::string& o : overrides) {
    apply_override(root, o);
    overridden.insert(o.substr(0, o.find('=')));
  }

  TrainConfig c;
  c.base_dir = base_dir;
  const Section top(root, name, "", overridden);
  top.only({"model", "tokenizer", "adapter", "data", "train", "optim", "eval", "save", "log", "output_dir", "seed"});
  top.str("output_dir", c.output_dir);
  top.integer("seed", c.seed);

  const Section model(root["model"], name, "model", overridden);
  model.only({"path", "device"});
  model.str("path", c.model.path);
  model.str("device", c.model.device);
  model.require(!c.model.path.empty(), "path", "is required (a Hugging Face checkpoint directory)");
  c.model.path = resolve(base_dir, c.model.path).string();

  c.adapter = parse_adapter_section(Section(root["adapter"], name, "adapter", overridden), base_dir);

  if (root["data"]) {
    const YAML::Node data = root["data"];
    if (!data.IsMap()) top.fail(data, "'data' must be a mapping (see data/README.md)");
    c.data_yaml = section_as_yaml(data, top, "data");
  }

  const Section train(root["train"], name, "train", overridden);
  train.only({"steps", "grad_accum", "precision", "activation_checkpointing", "zero_stage",
              "overlap_grad_reduce", "grad_bucket_mib", "shard_frozen_base", "threads", "peak_flops"});
  train.integer("steps", c.train.steps);
  train.integer("grad_accum", c.train.grad_accum);
  train.str("precision", c.train.precision);
  train.boolean("activation_checkpointing", c.train.activation_checkpointing);
  train.integer("zero_stage", c.train.zero_stage);
  train.boolean("overlap_grad_reduce", c.train.overlap_grad_reduce);
  train.number("grad_bucket_mib", c.train.grad_bucket_mib);
  train.require(c.train.grad_bucket_mib > 0 && c.train.grad_bucket_mib < 1e6, "grad_bucket_mib",
                fmt::format("must be a positive size in MiB, got {}", c.train.grad_bucket_mib));
  train.boolean("shard_frozen_base", c.train.shard_frozen_base);
  train.require(c.train.zero_stage >= 0 && c.train.zero_stage <= 2, "zero_stage",
                fmt::format("must be 0 (replicated optimizer state), 1 (optimizer state sharded over the ranks) or 2 "
                            "(optimizer state and gradients sharded), got {}",
                            c.train.zero_stage));
  train.integer("threads", c.train.threads);
  train.number("peak_flops", c.train.peak_flops);
  train.require(c.train.steps > 0, "steps", fmt::format("must be positive, got {}", c.train.steps));
  train.require(c.train.grad_accum > 0, "grad_accum", fmt::format("must be positive, got {}", c.train.grad_accum));
  train.one_of("precision", c.train.precision, {"f32", "bf16", "fp16"});
  train.require(!(c.train.zero_stage == 2 && c.train.precision == "fp16"), "zero_stage",
                "2 does not combine with precision fp16: the loss scaler's inf/NaN check would see only this rank's "
                "share of the gradients (use bf16, or zero_stage 1)");
  train.require(c.train.threads >= 0, "threads", fmt::format("must be 0 (all cores) or positive, got {}", c.train.threads));
  train.require(c.train.peak_flops >= 0, "peak_flops",
                fmt::format("must be 0 (measured) or a positive FLOP/s, got {}", c.train.peak_flops));

  const Section optim(root["optim"], name, "optim", overridden);
  optim.only({"lr", "weight_decay", "beta1", "beta2", "eps", "clip_grad_norm", "schedule", "warmup_steps",
              "min_lr_ratio", "decay_norms_biases_scales", "loss_scale_init", "loss_scale_growth_interval"});
  OptimSection& o = c.optim;
  optim.number("lr", o.lr);
  optim.number("weight_decay", o.weight_decay);
  optim.number("beta1", o.beta1);
  optim.number("beta2", o.beta2);
  optim.number("eps", o.eps);
  optim.number("clip_grad_norm", o.clip_grad_norm);
  optim.str("schedule", o.schedule);
  optim.integer("warmup_steps", o.warmup_steps);
  optim.number("min_lr_ratio", o.min_lr_ratio);
  optim.boolean("decay_norms_biases_scales", o.decay_norms_biases_scales);
  optim.number("loss_scale_init", o.loss_scale_init);
  optim.integer("loss_scale_growth_interval", o.loss_scale_growth_interval);
  optim.require(o.lr > 0, "lr", fmt::format("must be positive, got {}", o.lr));
  optim.require(o.weight_decay >= 0, "weight_decay", fmt::format("must be >= 0, got {}", o.weight_decay));
  optim.require(o.beta1 >= 0 && o.beta1 < 1, "beta1", fmt::format("must be in [0, 1), got {}", o.beta1));
  optim.require(o.beta2 >= 0 && o.beta2 < 1, "beta2", fmt::format("must be in [0, 1), got {}", o.beta2));
  optim.require(o.eps > 0, "eps", fmt::format("must be positive, got {}", o.eps));
  optim.require(o.clip_grad_norm >= 0, "clip_grad_norm", fmt::format("must be >= 0 (0: off), got {}", o.clip_grad_norm));
  optim.one_of("schedule", o.schedule, {"constant", "linear", "cosine"});
  optim.require(o.warmup_steps >= 0, "warmup_steps", fmt::format("must be >= 0, got {}", o.warmup_steps));
  optim.require(o.min_lr_ratio >= 0 && o.min_lr_ratio <= 1, "min_lr_ratio",
                fmt::format("must be in [0, 1], got {}", o.min_lr_ratio));
  optim.require(o.loss_scale_init > 0, "loss_scale_init", "must be positive");
  optim.require(o.loss_scale_growth_interval > 0, "loss_scale_growth_interval", "must be positive");

  const Section eval(root["eval"], name, "eval", overridden);
  eval.only({"interval", "heldout_batches", "data", "tasks", "data_dir", "limit"});
  if (root["eval"] && root["eval"]["data"]) {
    const YAML::Node data = root["eval"]["data"];
    if (!data.IsMap()) eval.fail(data, "'eval.data' must be a mapping (a data section, see data/README.md)");
    c.eval.data_yaml = section_as_yaml(data, eval, "eval.data");
  }
  eval.integer("interval", c.eval.interval);
  eval.integer("heldout_batches", c.eval.heldout_batches);
  eval.list("tasks", c.eval.tasks, "a task name");
  eval.str("data_dir", c.eval.data_dir);
  eval.integer("limit", c.eval.limit);
  eval.require(c.eval.interval >= 0, "interval", "must be >= 0 (0: off)");
  eval.require(c.eval.heldout_batches >= 0, "heldout_batches", "must be >= 0");
  eval.require(c.eval.limit >= 0, "limit", "must be >= 0 (0: all)");
  eval.require(c.eval.heldout_batches == 0 || !c.eval.data_yaml.empty(), "heldout_batches",
               "needs eval.data (the held-out datasets)");
  c.eval.data_dir = resolve(base_dir, c.eval.data_dir).string();

  const Section save(root["save"], name, "save", overridden);
  save.only({"interval", "keep_last"});
  save.integer("interval", c.save.interval);
  save.integer("keep_last", c.save.keep_last);
  save.require(c.save.interval >= 0, "interval", "must be >= 0 (0: only at the end)");
  save.require(c.save.keep_last >= 0, "keep_last", "must be >= 0 (0: keep all)");

  const Section tokenizer(root["tokenizer"], name, "tokenizer", overridden);
  tokenizer.only({"backend"});
  tokenizer.str("backend", c.tokenizer.backend);
  tokenizer.require(c.tokenizer.backend == "transformers" || c.tokenizer.backend == "sentencepiece", "backend",
                    "must be transformers or sentencepiece");

  const Section log(root["log"], name, "log", overridden);
  log.only({"interval", "tensorboard"});
  log.integer("interval", c.log.interval);
  log.boolean("tensorboard", c.log.tensorboard);
  log.require(c.log.interval > 0, "interval", "must be positive");
  return c;
} catch (const YAML::Exception& e) {
  // yaml-cpp's own exceptions (a conversion or subscript it refuses) where no check above foresaw one.
  throw Error(fmt::format("config: {}:{}: {}", name, e.mark.line + 1, e.msg));
}

}  // namespace

TrainConfig parse_train_config(const std::string& yaml_text, const std::string& name,
                               const std::vector<std::string>& overrides, const fs::path& base_dir) {
  TrainConfig c = parse_fields(yaml_text, name, overrides, base_dir);
  // The recorded configuration (to_yaml) must read back as this one: every string and the data
  // sections were checked where they were read, so this fails only if a check above misses a case,
  // and then it fails here rather than in a resumed run.
  const std::string written = to_yaml(c);
  std::string again;
  try {
    again = to_yaml(parse_fields(written, name + " (as written back)", {}, {}));
  } catch (const Error& e) {
    throw Error(fmt::format("config: {}: the configuration, written back as YAML, does not read again ({})", name,
                            e.message()));
  }
  MLR_CHECK(again == written, "config: {}: the configuration, written back as YAML, reads as a different one", name);
  return c;
}

TrainConfig load_train_config(const fs::path& yaml_file, const std::vector<std::string>& overrides) {
  std::ifstream in(yaml_file);
  MLR_CHECK(in.good(), "config: cannot open {}", yaml_file.string());
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_train_config(ss.str(), yaml_file.string(), overrides, yaml_file.parent_path());
}

std::string to_yaml(const TrainConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap << YAML::Key << "path" << YAML::Value << c.model.path
      << YAML::Key << "device" << YAML::Value << c.model.device
      << YAML::EndMap;
  out << YAML::Key << "tokenizer" << YAML::Value << YAML::BeginMap << YAML::Key << "backend" << YAML::Value
      << c.tokenizer.backend << YAML::EndMap;
  emit_adapter_section(out, c.adapter);
  if (!c.data_yaml.empty()) out << YAML::Key << "data" << YAML::Value << YAML::Load(c.data_yaml);
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap << YAML::Key << "steps" << YAML::Value << c.train.steps
      << YAML::Key << "grad_accum" << YAML::Value << c.train.grad_accum << YAML::Key << "precision" << YAML::Value
      << c.train.precision << YAML::Key << "activation_checkpointing" << YAML::Value
      << c.train.activation_checkpointing << YAML::Key << "zero_stage" << YAML::Value << c.train.zero_stage
      << YAML::Key << "overlap_grad_reduce" << YAML::Value << c.train.overlap_grad_reduce << YAML::Key
      << "grad_bucket_mib" << YAML::Value << c.train.grad_bucket_mib
      << YAML::Key << "shard_frozen_base" << YAML::Value << c.train.shard_frozen_base << YAML::Key << "threads"
      << YAML::Value << c.train.threads << YAML::Key << "peak_flops" << YAML::Value << c.train.peak_flops
      << YAML::EndMap;
  const OptimSection& o = c.optim;
  out << YAML::Key << "optim" << YAML::Value << YAML::BeginMap << YAML::Key << "lr" << YAML::Value << o.lr << YAML::Key
      << "weight_decay" << YAML::Value << o.weight_decay << YAML::Key << "beta1" << YAML::Value << o.beta1 << YAML::Key
      << "beta2" << YAML::Value << o.beta2 << YAML::Key << "eps" << YAML::Value << o.eps << YAML::Key
      << "clip_grad_norm" << YAML::Value << o.clip_grad_norm << YAML::Key << "schedule" << YAML::Value << o.schedule
      << YAML::Key << "warmup_steps" << YAML::Value << o.warmup_steps << YAML::Key << "min_lr_ratio" << YAML::Value
      << o.min_lr_ratio << YAML::Key << "decay_norms_biases_scales" << YAML::Value << o.decay_norms_biases_scales
      << YAML::Key << "loss_scale_init" << YAML::Value << o.loss_scale_init << YAML::Key
      << "loss_scale_growth_interval" << YAML::Value << o.loss_scale_growth_interval << YAML::EndMap;
  out << YAML::Key << "eval" << YAML::Value << YAML::BeginMap << YAML::Key << "interval" << YAML::Value
      << c.eval.interval << YAML::Key << "heldout_batches" << YAML::Value << c.eval.heldout_batches;
  if (!c.eval.data_yaml.empty()) out << YAML::Key << "data" << YAML::Value << YAML::Load(c.eval.data_yaml);
  out << YAML::Key
      << "tasks" << YAML::Value << YAML::Flow << c.eval.tasks << YAML::Key << "data_dir" << YAML::Value
      << c.eval.data_dir << YAML::Key << "limit" << YAML::Value << c.eval.limit << YAML::EndMap;
  out << YAML::Key << "save" << YAML::Value << YAML::BeginMap << YAML::Key << "interval" << YAML::Value
      << c.save.interval << YAML::Key << "keep_last" << YAML::Value << c.save.keep_last << YAML::EndMap;
  out << YAML::Key << "log" << YAML::Value << YAML::BeginMap << YAML::Key << "interval" << YAML::Value
      << c.log.interval << YAML::Key << "tensorboard" << YAML::Value << c.log.tensorboard << YAML::EndMap;
  out << YAML::Key << "output_dir" << YAML::Value << c.output_dir << YAML::Key << "seed" << YAML::Value << c.seed;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace mlr

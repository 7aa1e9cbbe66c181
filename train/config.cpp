// mlr-train configuration: YAML + dotted overrides -> TrainConfig, with file:line:key errors.
#include "train/config.h"

#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include "tensor/error.h"

namespace mlr {

namespace fs = std::filesystem;

namespace {

// Typed access to one YAML mapping; errors say "<file>:<line>: <what>" and name the dotted key.
class Section {
 public:
  Section(const YAML::Node& node, const std::string& file, std::string path, const std::set<std::string>& overridden)
      : node_(node), file_(file), path_(std::move(path)), overridden_(&overridden) {
    if (node_ && !node_.IsMap()) fail(node_, fmt::format("'{}' must be a mapping", path_));
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const {
    const int line = at.Mark().line >= 0 ? at.Mark().line + 1 : 0;
    throw Error(fmt::format("config: {}:{}: {}", file_, line, what));
  }

  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  // An error about key k: at its line in the file, or naming the command-line override it came from.
  [[noreturn]] void fail_key(const std::string& k, const YAML::Node& at, const std::string& what) const {
    if (overridden_->count(key(k))) throw Error(fmt::format("config: {}: command-line override: {}", file_, what));
    fail(at, what);
  }

  void only(const std::set<std::string>& known) const {
    if (!node_) return;
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar())
        fail(kv.first, fmt::format("a key of {} is a list or mapping, expected a name",
                                   path_.empty() ? std::string("the document") : "'" + path_ + "'"));
      const std::string k = kv.first.as<std::string>();
      if (!known.count(k)) fail(kv.first, fmt::format("unknown key '{}' (known: {})", key(k), fmt::join(known, ", ")));
    }
  }

  template <typename T>
  void read(const std::string& k, T& out, const char* expected) const {
    if (!node_) return;
    const YAML::Node v = node_[k];
    if (!v || v.IsNull()) return;
    if (!v.IsScalar()) fail_key(k, v, fmt::format("'{}' must be {}", key(k), expected));
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail_key(k, v, fmt::format("'{}' is \"{}\", expected {}", key(k), v.Scalar(), expected));
    }
  }
  void str(const std::string& k, std::string& out) const { read(k, out, "a string"); }
  void number(const std::string& k, double& out) const { read(k, out, "a number"); }
  void integer(const std::string& k, int64_t& out) const { read(k, out, "an integer"); }
  void integer(const std::string& k, int& out) const { read(k, out, "an integer"); }
  void boolean(const std::string& k, bool& out) const { read(k, out, "true or false"); }

  template <typename T>
  void list(const std::string& k, std::vector<T>& out, const char* expected) const {
    if (!node_) return;
    const YAML::Node v = node_[k];
    if (!v || v.IsNull()) return;
    if (v.IsScalar()) {  // a single value is a one-element list ("target_modules=q_proj")
      T one{};
      read(k, one, expected);
      out = {one};
      return;
    }
    if (!v.IsSequence()) fail_key(k, v, fmt::format("'{}' must be a list of {}", key(k), expected));
    out.clear();
    for (const auto& item : v) {
      try {
        out.push_back(item.as<T>());
      } catch (const YAML::Exception&) {
        fail_key(k, item, fmt::format("an entry of '{}' is not {}", key(k), expected));
      }
    }
  }

  void one_of(const std::string& k, const std::string& value, const std::set<std::string>& allowed) const {
    if (!allowed.count(value)) {
      const YAML::Node at = node_ && node_[k] ? node_[k] : node_;
      fail_key(k, at, fmt::format("'{}' is \"{}\", expected one of: {}", key(k), value, fmt::join(allowed, ", ")));
    }
  }
  void require(bool ok, const std::string& k, const std::string& what) const {
    if (!ok) fail_key(k, node_ && node_[k] ? node_[k] : node_, fmt::format("'{}' {}", key(k), what));
  }

  YAML::Node node() const { return node_; }

 private:
  YAML::Node node_;
  std::string file_;
  std::string path_;
  const std::set<std::string>* overridden_;
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

}  // namespace

TrainConfig parse_train_config(const std::string& yaml_text, const std::string& name,
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
  top.only({"model", "adapter", "data", "train", "optim", "eval", "save", "log", "output_dir", "seed"});
  top.str("output_dir", c.output_dir);
  top.integer("seed", c.seed);

  const Section model(root["model"], name, "model", overridden);
  model.only({"path", "device"});
  model.str("path", c.model.path);
  model.str("device", c.model.device);
  model.require(!c.model.path.empty(), "path", "is required (a Hugging Face checkpoint directory)");
  c.model.path = resolve(base_dir, c.model.path).string();

  const Section adapter(root["adapter"], name, "adapter", overridden);
  adapter.only({"type", "r", "alpha", "dropout", "rslora", "target_modules", "layers", "init_from", "n_modules", "ranks", "scale",
                "fixed_scale", "scale_init", "init", "top_k", "router", "balance_rate"});
  AdapterSection& a = c.adapter;
  adapter.str("type", a.type);
  adapter.one_of("type", a.type, {"lora", "multilora", "smora", "full"});
  adapter.integer("r", a.r);
  adapter.number("alpha", a.alpha);
  adapter.number("dropout", a.dropout);
  adapter.boolean("rslora", a.rslora);
  adapter.list("target_modules", a.target_modules, "a module name");
  adapter.list("layers", a.layers, "a layer index");
  adapter.str("init_from", a.init_from);
  adapter.require(a.init_from.empty() || a.type != "full", "init_from",
                  "applies to adapters; for full fine-tuning point model.path at the checkpoint to start from");
  a.init_from = resolve(base_dir, a.init_from).string();
  adapter.integer("n_modules", a.n_modules);
  adapter.list("ranks", a.ranks, "a rank");
  adapter.str("scale", a.scale);
  adapter.boolean("fixed_scale", a.fixed_scale);
  adapter.number("scale_init", a.scale_init);
  adapter.str("init", a.init);
  adapter.integer("top_k", a.top_k);
  adapter.str("router", a.router);
  adapter.number("balance_rate", a.balance_rate);
  adapter.require(a.r > 0, "r", fmt::format("must be positive, got {}", a.r));
  adapter.require(a.alpha > 0, "alpha", fmt::format("must be positive, got {}", a.alpha));
  adapter.require(a.dropout >= 0 && a.dropout < 1, "dropout", fmt::format("must be in [0, 1), got {}", a.dropout));
  const std::set<std::string> modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  for (const std::string& m : a.target_modules)
    adapter.require(modules.count(m) > 0, "target_modules",
                    fmt::format("has \"{}\", expected names among {}", m, fmt::join(modules, ", ")));
  adapter.require(a.type == "full" || !a.target_modules.empty(), "target_modules", "is empty");
  for (int64_t l : a.layers) adapter.require(l >= 0, "layers", fmt::format("has a negative index {}", l));
  adapter.one_of("scale", a.scale, {"scalar", "per_channel"});
  adapter.one_of("init", a.init, {"kaiming", "gaussian"});
  adapter.one_of("router", a.router, {"sigmoid", "softmax"});
  if (a.type == "multilora") {
    adapter.require(a.n_modules > 0, "n_modules", fmt::format("must be positive, got {}", a.n_modules));
    if (a.ranks.empty()) {
      adapter.require(a.r % a.n_modules == 0, "r",
                      fmt::format("{} is not divisible by n_modules {} (give adapter.ranks to split it unevenly)", a.r,
                                  a.n_modules));
    } else {
      adapter.require(static_cast<int64_t>(a.ranks.size()) == a.n_modules, "ranks",
                      fmt::format("has {} entries for n_modules {}", a.ranks.size(), a.n_modules));
      for (int64_t r : a.ranks) adapter.require(r > 0, "ranks", fmt::format("has a non-positive rank {}", r));
    }
  }
  if (a.type == "smora")
    adapter.require(a.top_k >= 1 && a.top_k <= a.r, "top_k", fmt::format("must be in [1, r = {}], got {}", a.r, a.top_k));

  if (root["data"]) {
    const YAML::Node data = root["data"];
    if (!data.IsMap()) top.fail(data, "'data' must be a mapping (see data/README.md)");
    YAML::Emitter out;
    out << data;
    c.data_yaml = out.c_str();
  }

  const Section train(root["train"], name, "train", overridden);
  train.only({"steps", "grad_accum", "precision", "activation_checkpointing"});
  train.integer("steps", c.train.steps);
  train.integer("grad_accum", c.train.grad_accum);
  train.str("precision", c.train.precision);
  train.boolean("activation_checkpointing", c.train.activation_checkpointing);
  train.require(c.train.steps > 0, "steps", fmt::format("must be positive, got {}", c.train.steps));
  train.require(c.train.grad_accum > 0, "grad_accum", fmt::format("must be positive, got {}", c.train.grad_accum));
  train.one_of("precision", c.train.precision, {"f32", "bf16", "fp16"});

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
    YAML::Emitter out;
    out << data;
    c.eval.data_yaml = out.c_str();
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
  const AdapterSection& a = c.adapter;
  out << YAML::Key << "adapter" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "type" << YAML::Value << a.type << YAML::Key << "r" << YAML::Value << a.r << YAML::Key << "alpha"
      << YAML::Value << a.alpha << YAML::Key << "dropout" << YAML::Value << a.dropout << YAML::Key << "rslora"
      << YAML::Value << a.rslora << YAML::Key << "target_modules" << YAML::Value << YAML::Flow << a.target_modules
      << YAML::Key << "layers" << YAML::Value << YAML::Flow << a.layers << YAML::Key << "init_from" << YAML::Value
      << a.init_from << YAML::Key << "n_modules" << YAML::Value
      << a.n_modules << YAML::Key << "ranks" << YAML::Value << YAML::Flow << a.ranks << YAML::Key << "scale"
      << YAML::Value << a.scale << YAML::Key << "fixed_scale" << YAML::Value << a.fixed_scale << YAML::Key
      << "scale_init" << YAML::Value << a.scale_init << YAML::Key << "init" << YAML::Value << a.init << YAML::Key
      << "top_k" << YAML::Value << a.top_k << YAML::Key << "router" << YAML::Value << a.router << YAML::Key
      << "balance_rate" << YAML::Value << a.balance_rate << YAML::EndMap;
  if (!c.data_yaml.empty()) out << YAML::Key << "data" << YAML::Value << YAML::Load(c.data_yaml);
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap << YAML::Key << "steps" << YAML::Value << c.train.steps
      << YAML::Key << "grad_accum" << YAML::Value << c.train.grad_accum << YAML::Key << "precision" << YAML::Value
      << c.train.precision << YAML::Key << "activation_checkpointing" << YAML::Value
      << c.train.activation_checkpointing << YAML::EndMap;
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

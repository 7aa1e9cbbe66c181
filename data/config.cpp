#include "data/config.h"

#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "data/reader_detail.h"
#include "tensor/error.h"

namespace mlr::data {

namespace fs = std::filesystem;

namespace {

// Typed access to a YAML mapping with "file:line: key" errors and a check for unknown keys.
class Section {
 public:
  Section(const YAML::Node& node, std::string file, std::string path) : node_(node), file_(std::move(file)), path_(std::move(path)) {
    if (!node_.IsMap()) fail(node_, fmt::format("'{}' must be a mapping", path_.empty() ? "the document" : path_));
  }

  [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const {
    throw Error(fmt::format("data: {}:{}: {}", file_, at.Mark().line + 1, what));
  }

  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  // Throws on keys outside `known` (typos would otherwise be silently ignored).
  void only(const std::set<std::string>& known) const {
    for (const auto& kv : node_) {
      if (!kv.first.IsScalar())
        fail(kv.first, fmt::format("a key of {} is a list or mapping, expected a name",
                                   path_.empty() ? std::string("the document") : "'" + path_ + "'"));
      const std::string k = kv.first.as<std::string>();
      if (!known.count(k)) fail(kv.first, fmt::format("unknown key '{}' (known: {})", key(k), fmt::join(known, ", ")));
    }
  }

  bool has(const std::string& k) const { return static_cast<bool>(node_[k]); }
  YAML::Node get(const std::string& k) const { return node_[k]; }

  template <typename T>
  T value(const std::string& k, T fallback, const char* expected) const {
    const YAML::Node v = node_[k];
    if (!v) return fallback;
    if (!v.IsScalar()) fail(v, fmt::format("'{}' must be {}", key(k), expected));
    try {
      return v.as<T>();
    } catch (const YAML::Exception&) {
      fail(v, fmt::format("'{}' is \"{}\", expected {}", key(k), v.Scalar(), expected));
    }
  }
  std::string str(const std::string& k, std::string fallback = "") const { return value<std::string>(k, fallback, "a string"); }
  double number(const std::string& k, double fallback) const { return value<double>(k, fallback, "a number"); }
  int64_t integer(const std::string& k, int64_t fallback) const { return value<int64_t>(k, fallback, "an integer"); }
  bool boolean(const std::string& k, bool fallback) const { return value<bool>(k, fallback, "true or false"); }

  // A string value parsed by `parse`, whose mlr::Error is re-thrown at the value's line.
  template <typename F>
  auto parsed(const std::string& k, F parse) const {
    const std::string text = str(k);
    try {
      return parse(text);
    } catch (const Error& e) {
      std::string what = e.what();
      if (what.rfind("mlr: data: ", 0) == 0) what = what.substr(11);
      fail(node_[k], fmt::format("'{}': {}", key(k), what));
    }
  }

  const std::string& file() const { return file_; }

 private:
  YAML::Node node_;
  std::string file_, path_;
};

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  const fs::path path(p);
  return path.is_absolute() ? p : (base / path).lexically_normal().string();
}

Template parse_template(const Section& s, Format format) {
  s.only({"prompt", "target", "choices", "target_delimiter", "system", "user", "assistant"});
  Template t = default_template(format);
  if (s.has("prompt")) t.prompt = s.str("prompt");
  if (s.has("target")) {
    t.target = s.str("target");
    t.choices.clear();  // a target replaces the format's choices
  }
  if (s.has("choices")) {
    const YAML::Node c = s.get("choices");
    if (!c.IsSequence()) s.fail(c, fmt::format("'{}' must be a list of strings", s.key("choices")));
    t.choices.clear();
    for (const auto& item : c) t.choices.push_back(item.as<std::string>());
  }
  if (s.has("target_delimiter")) t.target_delimiter = s.str("target_delimiter");
  if (s.has("system")) t.system = s.str("system");
  if (s.has("user")) t.user = s.str("user");
  if (s.has("assistant")) t.assistant = s.str("assistant");
  return t;
}

}  // namespace

DataConfig parse_data_config(const std::string& yaml_text, const std::string& name, const fs::path& base_dir) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("data: {}:{}: malformed YAML: {}", name, e.mark.line + 1, e.msg));
  }
  try {
    const Section top(root, name, "");
    top.only({"tokenizer", "cache_dir", "seed", "threads", "mixture", "packing", "datasets"});
    DataConfig c;
    c.tokenizer = resolve(base_dir, top.str("tokenizer"));
    if (top.has("cache_dir")) c.cache.dir = resolve(base_dir, top.str("cache_dir"));
    c.cache.threads = static_cast<int>(top.integer("threads", 0));
    c.mixture.seed = static_cast<uint64_t>(top.integer("seed", 0));
    if (top.has("mixture")) {
      const Section m(top.get("mixture"), name, "mixture");
      m.only({"mode", "temperature", "rate_limit", "shuffle"});
      if (m.has("mode")) c.mixture.mode = m.parsed("mode", parse_mix_mode);
      c.mixture.temperature = m.number("temperature", c.mixture.temperature);
      c.mixture.rate_limit = m.number("rate_limit", c.mixture.rate_limit);
      c.mixture.shuffle = m.boolean("shuffle", c.mixture.shuffle);
      if (c.mixture.temperature <= 0) m.fail(m.get("temperature"), "'mixture.temperature' must be > 0");
    }
    if (top.has("packing")) {
      const Section p(top.get("packing"), name, "packing");
      p.only({"seq_len", "batch_rows", "packed", "train_on_prompt", "truncation", "drop_overlong", "pad_id", "prefetch"});
      c.loader.pack.seq_len = p.integer("seq_len", c.loader.pack.seq_len);
      c.loader.batch_rows = p.integer("batch_rows", c.loader.batch_rows);
      c.loader.pack.packed = p.boolean("packed", c.loader.pack.packed);
      c.loader.pack.train_on_prompt = p.boolean("train_on_prompt", c.loader.pack.train_on_prompt);
      if (p.has("truncation")) c.loader.truncation = p.parsed("truncation", parse_truncation);
      c.loader.drop_overlong = p.boolean("drop_overlong", c.loader.drop_overlong);
      c.loader.pack.pad_id = static_cast<int32_t>(p.integer("pad_id", c.loader.pack.pad_id));
      c.loader.prefetch = static_cast<int>(p.integer("prefetch", c.loader.prefetch));
      if (c.loader.pack.seq_len < 2) p.fail(p.get("seq_len"), "'packing.seq_len' must be at least 2");
      if (c.loader.batch_rows < 1) p.fail(p.get("batch_rows"), "'packing.batch_rows' must be at least 1");
    }
    const YAML::Node list = top.get("datasets");
    if (!list || !list.IsSequence() || list.size() == 0) {
      top.fail(list ? list : root, "'datasets' must be a non-empty list");
    }
    for (size_t i = 0; i < list.size(); ++i) {
      const Section d(list[i], name, fmt::format("datasets[{}]", i));
      d.only({"name", "format", "path", "weight", "epochs", "max_examples", "skip_bad", "bos", "eos", "template"});
      DatasetSpec spec;
      if (!d.has("format")) d.fail(list[i], fmt::format("'{}' is missing", d.key("format")));
      if (!d.has("path")) d.fail(list[i], fmt::format("'{}' is missing", d.key("path")));
      spec.format = d.parsed("format", parse_format);
      spec.path = resolve(base_dir, d.str("path"));
      spec.name = d.str("name", std::string(format_name(spec.format)));
      spec.skip_bad = d.boolean("skip_bad", false);
      if (d.has("bos")) spec.tokenize.bos = d.parsed("bos", parse_special);
      if (d.has("eos")) spec.tokenize.eos = d.parsed("eos", parse_special);
      spec.tmpl = d.has("template") ? parse_template(Section(d.get("template"), name, d.key("template")), spec.format)
                                    : default_template(spec.format);
      // Compile once here so a template error points at the config.
      try {
        CompiledTemplate(spec.tmpl, spec.format, spec.name);
      } catch (const Error& e) {
        std::string what = e.what();
        if (what.rfind("mlr: data: ", 0) == 0) what = what.substr(11);
        d.fail(d.has("template") ? d.get("template") : list[i], what);
      }
      MixtureSource source;
      source.name = spec.name;
      source.weight = d.number("weight", 1.0);
      source.epochs = d.number("epochs", 1.0);
      source.max_examples = d.integer("max_examples", 0);
      if (source.weight < 0) d.fail(d.get("weight"), fmt::format("'{}' is {}, expected >= 0", d.key("weight"), source.weight));
      if (source.epochs <= 0) d.fail(d.get("epochs"), fmt::format("'{}' is {}, expected > 0", d.key("epochs"), source.epochs));
      if (source.max_examples < 0) d.fail(d.get("max_examples"), fmt::format("'{}' must be >= 0", d.key("max_examples")));
      c.datasets.push_back(std::move(spec));
      c.sources.push_back(std::move(source));
    }
    validate_data_config(c);
    return c;
  } catch (const YAML::Exception& e) {
    throw Error(fmt::format("data: {}:{}: {}", name, e.mark.line + 1, e.msg));
  }
}

DataConfig load_data_config(const fs::path& yaml_file) {
  return parse_data_config(detail::read_file(yaml_file), yaml_file.string(), yaml_file.parent_path());
}

void validate_data_config(const DataConfig& config) {
  MLR_CHECK(!config.datasets.empty(), "data: the configuration has no datasets");
  std::set<std::string> names;
  for (const auto& d : config.datasets) {
    MLR_CHECK(names.insert(d.name).second, "data: two datasets are named '{}'; names must be unique", d.name);
  }
  double total = 0;
  for (const auto& s : config.sources) total += s.weight;
  MLR_CHECK(config.mixture.mode != MixMode::weights || total > 0, "data: mixture: every dataset has weight 0; nothing to sample");
}

}  // namespace mlr::data

#include "data/config.h"

#include <set>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/config_section.h"
#include "data/reader_detail.h"
#include "tensor/error.h"

namespace mlr::data {

namespace fs = std::filesystem;

namespace {

// The data config's sections (base/config_section.h): errors start with "data: ".
class Section : public ConfigSection {
 public:
  Section(const YAML::Node& node, std::string file, std::string path)
      : ConfigSection(node, "data", std::move(file), std::move(path)) {}
};

std::string resolve(const fs::path& base, const std::string& p) {
  if (p.empty()) return p;
  const fs::path path(p);
  return path.is_absolute() ? p : (base / path).lexically_normal().string();
}

Template parse_template(const Section& s, Format format) {
  s.only({"prompt", "target", "choices", "target_delimiter", "system", "user", "assistant"});
  Template t = default_template(format);
  s.str("prompt", t.prompt);
  if (s.has("target")) {
    s.str("target", t.target);
    t.choices.clear();  // a target replaces the format's choices
  }
  if (s.has("choices")) {
    const YAML::Node c = s.get("choices");
    if (!c.IsSequence()) s.fail(c, fmt::format("'{}' must be a list of strings", s.key("choices")));
    t.choices.clear();
    for (const auto& item : c) t.choices.push_back(item.as<std::string>());
  }
  s.str("target_delimiter", t.target_delimiter);
  s.str("system", t.system);
  s.str("user", t.user);
  s.str("assistant", t.assistant);
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
    top.str("tokenizer", c.tokenizer);
    c.tokenizer = resolve(base_dir, c.tokenizer);
    std::string cache_dir;
    top.str("cache_dir", cache_dir);
    if (!cache_dir.empty()) c.cache.dir = resolve(base_dir, cache_dir);
    c.cache.threads = 0;
    top.integer("threads", c.cache.threads);
    int64_t seed = 0;
    top.integer("seed", seed);
    c.mixture.seed = static_cast<uint64_t>(seed);
    if (top.has("mixture")) {
      const Section m(top.get("mixture"), name, "mixture");
      m.only({"mode", "temperature", "rate_limit", "shuffle"});
      if (m.has("mode")) c.mixture.mode = m.parsed("mode", parse_mix_mode);
      m.number("temperature", c.mixture.temperature);
      m.number("rate_limit", c.mixture.rate_limit);
      m.boolean("shuffle", c.mixture.shuffle);
      if (c.mixture.temperature <= 0) m.fail(m.get("temperature"), "'mixture.temperature' must be > 0");
    }
    if (top.has("packing")) {
      const Section p(top.get("packing"), name, "packing");
      p.only({"seq_len", "batch_rows", "packed", "train_on_prompt", "truncation", "drop_overlong", "pad_id", "prefetch"});
      p.integer("seq_len", c.loader.pack.seq_len);
      p.integer("batch_rows", c.loader.batch_rows);
      p.boolean("packed", c.loader.pack.packed);
      p.boolean("train_on_prompt", c.loader.pack.train_on_prompt);
      if (p.has("truncation")) c.loader.truncation = p.parsed("truncation", parse_truncation);
      p.boolean("drop_overlong", c.loader.drop_overlong);
      int64_t pad_id = c.loader.pack.pad_id;
      p.integer("pad_id", pad_id);
      c.loader.pack.pad_id = static_cast<int32_t>(pad_id);
      p.integer("prefetch", c.loader.prefetch);
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
      std::string path;
      d.str("path", path);
      spec.path = resolve(base_dir, path);
      spec.name = std::string(format_name(spec.format));
      d.str("name", spec.name);
      spec.skip_bad = false;
      d.boolean("skip_bad", spec.skip_bad);
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
      source.weight = 1.0;
      source.epochs = 1.0;
      source.max_examples = 0;
      d.number("weight", source.weight);
      d.number("epochs", source.epochs);
      d.integer("max_examples", source.max_examples);
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

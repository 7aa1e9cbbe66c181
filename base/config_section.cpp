#include "base/config_section.h"

#include <fmt/ranges.h>

namespace mlr {

bool yaml_round_trips(const std::string& text) {
  // Inside a block mapping and followed by another key, as a configuration writes its values: a
  // carriage return that ends a plain scalar survives at the end of the text but not before a line
  // break, where it reads as part of the break.
  YAML::Emitter out;
  out << YAML::BeginMap << YAML::Key << "k" << YAML::Value << text << YAML::Key << "next" << YAML::Value << 0
      << YAML::EndMap;
  if (!out.good()) return false;
  try {
    const YAML::Node back = YAML::Load(out.c_str());
    return back.IsMap() && back["k"].IsScalar() && back["k"].Scalar() == text;
  } catch (const YAML::Exception&) {
    return false;
  }
}

ConfigSection::ConfigSection(const YAML::Node& node, std::string context, std::string file, std::string path,
                             const std::set<std::string>* overridden)
    : node_(node), context_(std::move(context)), file_(std::move(file)), path_(std::move(path)), overridden_(overridden) {
  if (node_ && !node_.IsMap()) fail(node_, fmt::format("'{}' must be a mapping", path_.empty() ? "the document" : path_));
}

void ConfigSection::fail(const YAML::Node& at, const std::string& what) const {
  const int line = at.Mark().line >= 0 ? at.Mark().line + 1 : 0;
  throw Error(fmt::format("{}: {}:{}: {}", context_, file_, line, what));
}

void ConfigSection::fail_key(const std::string& k, const YAML::Node& at, const std::string& what) const {
  if (overridden_ && overridden_->count(key(k)))
    throw Error(fmt::format("{}: {}: command-line override: {}", context_, file_, what));
  fail(at, what);
}

void ConfigSection::only(const std::set<std::string>& known) const {
  if (!node_) return;
  for (const auto& kv : node_) {
    if (!kv.first.IsScalar())
      fail(kv.first, fmt::format("a key of {} is a list or mapping, expected a name",
                                 path_.empty() ? std::string("the document") : "'" + path_ + "'"));
    const std::string k = kv.first.as<std::string>();
    if (!known.count(k)) fail(kv.first, fmt::format("unknown key '{}' (known: {})", key(k), fmt::join(known, ", ")));
  }
}

namespace {
std::string not_writable(const std::string& dotted_key) {
  return fmt::format("'{}' cannot be written back as YAML unchanged (it holds a control character or bytes that "
                     "are not UTF-8)", dotted_key);
}
}  // namespace

void ConfigSection::require_writable(const std::string& k, const YAML::Node& at, const std::string& text) const {
  if (!yaml_round_trips(text)) fail_key(k, at, not_writable(key(k)));
}

void ConfigSection::require_writable_tree(const YAML::Node& node, const std::string& dotted_key) const {
  if (node.IsScalar()) {
    if (!yaml_round_trips(node.Scalar())) fail(node, not_writable(dotted_key));
  } else if (node.IsSequence()) {
    for (size_t i = 0; i < node.size(); ++i) require_writable_tree(node[i], fmt::format("{}[{}]", dotted_key, i));
  } else if (node.IsMap()) {
    for (const auto& kv : node) {
      // A key is named in the error; a long one (a fuzzer's, a mis-indented block) by its start.
      std::string name = kv.first.IsScalar() ? kv.first.Scalar() : "?";
      if (name.size() > 40) name = name.substr(0, 37) + "...";
      require_writable_tree(kv.first, fmt::format("{}.{}", dotted_key, name));
      require_writable_tree(kv.second, fmt::format("{}.{}", dotted_key, name));
    }
  }
}

void ConfigSection::one_of(const std::string& k, const std::string& value, const std::set<std::string>& allowed) const {
  if (!allowed.count(value)) {
    const YAML::Node at = has(k) ? get(k) : node_;
    fail_key(k, at, fmt::format("'{}' is \"{}\", expected one of: {}", key(k), value, fmt::join(allowed, ", ")));
  }
}

void ConfigSection::require(bool ok, const std::string& k, const std::string& what) const {
  if (!ok) fail_key(k, has(k) ? get(k) : node_, fmt::format("'{}' {}", key(k), what));
}

std::string ConfigSection::without_prefix(const std::string& message) const {
  const std::string prefix = "mlr: " + context_ + ": ";
  return message.rfind(prefix, 0) == 0 ? message.substr(prefix.size()) : message;
}

}  // namespace mlr

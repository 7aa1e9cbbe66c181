// Typed reading of one YAML mapping of a config file (the training run's and the data mixture's),
// with errors that say "<context>: <file>:<line>: <what>" and name the dotted key, and a check that
// rejects unknown keys (a typo is an error, never silently ignored). A key that is absent or has
// no value (null) keeps the default already in the output variable.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include "base/error.h"

namespace mlr {

// Whether yaml-cpp writes `text` as a scalar that reads back as the same bytes. Configurations are
// written back (mlr-train records the resolved one in its run directory, and a resumed run reads
// it), and yaml-cpp's emitter writes some strings it reads back differently: a carriage return in
// a plain scalar is dropped, and bytes that are not UTF-8 become U+FFFD in a quoted one. Such a
// string is refused where it is read.
bool yaml_round_trips(const std::string& text);

class ConfigSection {
 public:
  // `node`: the mapping (an undefined node is an absent section: every read keeps its default);
  // `context`: first word of every error ("config", "data"); `file`: the YAML file's name;
  // `path`: this section's dotted key ("" for the document); `overridden`: dotted keys set on the
  // command line, whose errors name the override instead of a line of the file.
  ConfigSection(const YAML::Node& node, std::string context, std::string file, std::string path,
                const std::set<std::string>* overridden = nullptr);

  [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const;
  // An error about key k: at its line in the file, or naming the command-line override it came from.
  [[noreturn]] void fail_key(const std::string& k, const YAML::Node& at, const std::string& what) const;
  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  // Throws on keys outside `known`.
  void only(const std::set<std::string>& known) const;

  bool has(const std::string& k) const { return node_ && node_[k]; }
  YAML::Node get(const std::string& k) const { return node_ ? node_[k] : YAML::Node(); }
  const YAML::Node& node() const { return node_; }
  const std::string& file() const { return file_; }

  // A scalar converted to T into `out`; `expected` says what was wanted ("an integer").
  template <typename T>
  void read(const std::string& k, T& out, const char* expected) const {
    const YAML::Node v = get(k);
    if (!v || v.IsNull()) return;
    if (!v.IsScalar()) fail_key(k, v, fmt::format("'{}' must be {}", key(k), expected));
    try {
      out = v.as<T>();
    } catch (const YAML::Exception&) {
      fail_key(k, v, fmt::format("'{}' is \"{}\", expected {}", key(k), v.Scalar(), expected));
    }
    if constexpr (std::is_same_v<T, std::string>) require_writable(k, v, out);
  }
  void str(const std::string& k, std::string& out) const { read(k, out, "a string"); }
  void number(const std::string& k, double& out) const { read(k, out, "a number"); }
  void integer(const std::string& k, int64_t& out) const { read(k, out, "an integer"); }
  void integer(const std::string& k, int& out) const { read(k, out, "an integer"); }
  void boolean(const std::string& k, bool& out) const { read(k, out, "true or false"); }

  // A list of T; a single scalar is a one-element list ("target_modules=q_proj").
  template <typename T>
  void list(const std::string& k, std::vector<T>& out, const char* expected) const {
    const YAML::Node v = get(k);
    if (!v || v.IsNull()) return;
    if (v.IsScalar()) {
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
      if constexpr (std::is_same_v<T, std::string>) require_writable(k, item, out.back());
    }
  }

  // A string value turned into something by `parse`, whose mlr::Error is re-thrown at the value's
  // line (the "mlr: <context>: " prefix of its message dropped).
  template <typename F>
  auto parsed(const std::string& k, F parse) const {
    std::string text;
    str(k, text);
    try {
      return parse(text);
    } catch (const Error& e) {
      fail_key(k, get(k), fmt::format("'{}': {}", key(k), without_prefix(e.what())));
    }
  }

  // Throws at `at` unless `text` survives writing as YAML and reading back (yaml_round_trips).
  void require_writable(const std::string& k, const YAML::Node& at, const std::string& text) const;
  // The same for every key and value under `node` (a section kept as YAML), naming the first one at
  // fault by its dotted key below `dotted_key`.
  void require_writable_tree(const YAML::Node& node, const std::string& dotted_key) const;

  void one_of(const std::string& k, const std::string& value, const std::set<std::string>& allowed) const;
  // Throws "'<key>' <what>" at k's line unless ok.
  void require(bool ok, const std::string& k, const std::string& what) const;

  // An error message without the "mlr: <context>: " that it would otherwise repeat.
  std::string without_prefix(const std::string& message) const;

 private:
  YAML::Node node_;
  std::string context_, file_, path_;
  const std::set<std::string>* overridden_;
};

}  // namespace mlr

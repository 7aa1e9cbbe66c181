// The YAML section reader shared by the run and data configs: typed reads with defaults, errors at
// the value's line naming the dotted key, unknown keys rejected, command-line overrides named.
#include <doctest/doctest.h>

#include "base/config_section.h"
#include "tests/test_support.h"

using namespace mlr;

TEST_CASE("typed reads keep defaults for absent and null keys") {
  const YAML::Node root = YAML::Load("train:\n  steps: 40\n  precision: bf16\n  ckpt: true\n  lr: 2e-4\n  warmup:\n");
  const ConfigSection s(root["train"], "config", "run.yaml", "train");
  int64_t steps = 1, warmup = 5;
  std::string precision = "f32", missing = "default";
  bool ckpt = false;
  double lr = 0;
  s.integer("steps", steps);
  s.integer("warmup", warmup);
  s.str("precision", precision);
  s.str("missing", missing);
  s.boolean("ckpt", ckpt);
  s.number("lr", lr);
  CHECK(steps == 40);
  CHECK(warmup == 5);
  CHECK(precision == "bf16");
  CHECK(missing == "default");
  CHECK(ckpt);
  CHECK(lr == doctest::Approx(2e-4));
  const ConfigSection absent(root["eval"], "config", "run.yaml", "eval");
  absent.only({"interval"});
  absent.integer("interval", steps);
  CHECK(steps == 40);
}

TEST_CASE("errors name the file, the line and the dotted key") {
  const YAML::Node root = YAML::Load("packing:\n  seq_len: long\n  typo: 1\n  list: {a: 1}\n");
  const ConfigSection s(root["packing"], "data", "mix.yaml", "packing");
  int64_t n = 0;
  CHECK_ERROR_CONTAINS(s.integer("seq_len", n), "data: mix.yaml:2: 'packing.seq_len' is \"long\", expected an integer");
  CHECK_ERROR_CONTAINS(s.only({"seq_len", "list"}), "mix.yaml:3: unknown key 'packing.typo' (known: list, seq_len)");
  CHECK_ERROR_CONTAINS(s.integer("list", n), "mix.yaml:4: 'packing.list' must be an integer");
  CHECK_ERROR_CONTAINS(ConfigSection(YAML::Load("- 1\n"), "data", "mix.yaml", ""), "'the document' must be a mapping");
  CHECK_ERROR_CONTAINS(s.require(false, "seq_len", "must be at least 2"), "mix.yaml:2: 'packing.seq_len' must be at least 2");
  CHECK_ERROR_CONTAINS(s.one_of("seq_len", "long", {"short"}), "'packing.seq_len' is \"long\", expected one of: short");
}

TEST_CASE("lists: a scalar is a one-element list; bad entries are named") {
  const YAML::Node root = YAML::Load("adapter:\n  one: q_proj\n  many: [q_proj, v_proj]\n  layers: [1, x]\n");
  const ConfigSection s(root["adapter"], "config", "run.yaml", "adapter");
  std::vector<std::string> one, many;
  s.list("one", one, "a module name");
  s.list("many", many, "a module name");
  CHECK(one == std::vector<std::string>{"q_proj"});
  CHECK(many == std::vector<std::string>{"q_proj", "v_proj"});
  std::vector<int64_t> layers;
  CHECK_ERROR_CONTAINS(s.list("layers", layers, "a layer index"), "run.yaml:4: an entry of 'adapter.layers' is not a layer index");
}

TEST_CASE("a value set on the command line is named as an override, not a line") {
  YAML::Node root = YAML::Load("optim:\n  lr: 1\n");
  root["optim"]["lr"] = YAML::Load("fast");
  const std::set<std::string> overridden = {"optim.lr"};
  const ConfigSection s(root["optim"], "config", "run.yaml", "optim", &overridden);
  double lr = 0;
  CHECK_ERROR_CONTAINS(s.number("lr", lr), "config: run.yaml: command-line override: 'optim.lr' is \"fast\", expected a number");
}

TEST_CASE("parsed values: the parser's error is re-thrown at the value's line without its prefix") {
  const YAML::Node root = YAML::Load("name: x\nformat: csvv\n");
  const ConfigSection s(root, "data", "mix.yaml", "");
  const auto parse = [](const std::string& text) -> int {
    if (text == "csv") return 1;
    throw Error(fmt::format("data: unknown format '{}'", text));
  };
  CHECK_ERROR_CONTAINS(s.parsed("format", parse), "data: mix.yaml:2: 'format': unknown format 'csvv'");
}

TEST_CASE("a string yaml-cpp would write back changed is refused where it is read") {
  // The run's configuration is written back (config.resolved.yaml): a carriage return in a plain
  // scalar was dropped on reading it back; bytes that are not UTF-8 came back as U+FFFD where a
  // control character made yaml-cpp quote the string.
  for (const char* text : {"/models/x", "", "null", "~", "true", " padded ", "a: b", "#x", "line\nbreak", "tab\there",
                           "\xe6\x97\xa5\xe6\x9c\xac", "/models/\xb7x"}) {
    CAPTURE(text);
    CHECK(yaml_round_trips(text));
  }
  CHECK_FALSE(yaml_round_trips("/models/x\r"));
  CHECK_FALSE(yaml_round_trips("/mod\xff\x03x"));
  const YAML::Node root = YAML::Load("model:\n  device: cpu\n  path: \"/models/x\\r\\r\"\n  names: [a, \"b\xff\x01\"]\n");
  const ConfigSection s(root["model"], "config", "run.yaml", "model");
  std::string device, path;
  s.str("device", device);
  CHECK(device == "cpu");
  CHECK_ERROR_CONTAINS(s.str("path", path), "config: run.yaml:3: 'model.path' cannot be written back as YAML unchanged");
  std::vector<std::string> names;
  CHECK_ERROR_CONTAINS(s.list("names", names, "a name"), "run.yaml:4: 'model.names' cannot be written back");
}

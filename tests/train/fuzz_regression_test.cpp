// Run-configuration inputs the fuzz target (fuzz/train_config_fuzz.cpp) found to escape the
// parser's error handling, kept as tests.
#include <doctest/doctest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "tests/test_support.h"
#include "train/config.h"

using namespace mlr;

TEST_CASE("train config: an override on a document that is not a mapping is an error") {
  // yaml-cpp threw YAML::BadSubscript, unnamed, when the override indexed a scalar document.
  CHECK_ERROR_CONTAINS(parse_train_config("# a comment\nwh1\n", "run.yaml", {"adapter.r=8"}, "/configs"),
                       "config override \"adapter.r=8\": the configuration is not a mapping of sections");
  CHECK_ERROR_CONTAINS(parse_train_config("- a\n- b\n", "run.yaml", {"seed=1"}, "/configs"),
                       "the configuration is not a mapping");
}

TEST_CASE("train config: a list or mapping used as a key is an error naming the line") {
  // "? key: value" makes a mapping the key; yaml-cpp threw TypedBadConversion from the key check.
  CHECK_ERROR_CONTAINS(parse_train_config("model: {path: m}\n?  clip_grad_norm: 1.0\n", "run.yaml", {}, "/configs"),
                       "run.yaml:2: a key of the document is a list or mapping, expected a name");
  CHECK_ERROR_CONTAINS(parse_train_config("model: {path: m}\noptim: {[lr]: 1}\n", "run.yaml", {}, "/configs"),
                       "run.yaml:2: a key of 'optim' is a list or mapping");
}

TEST_CASE("train config: a data section yaml-cpp cannot write back is an error, not a crash in to_yaml") {
  // Invalid UTF-8 in a data scalar: yaml-cpp's emitter wrote text its parser refused, and to_yaml
  // (mlr-train writes config.resolved.yaml first) threw YAML::ParserException. The first scalar
  // refused is a key (a mis-indented line in single quotes) that holds a byte 0x95.
  std::ifstream in(std::string(MLR_SOURCE_DIR) + "/tests/fixtures/train/fuzz_data_section_not_utf8.yaml", std::ios::binary);
  REQUIRE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  CHECK_ERROR_CONTAINS(parse_train_config(text, "run.yaml", {}, "/configs"),
                       "run.yaml:16: 'data.  - {name: boolq, format: boolq, path...' cannot be written back as YAML "
                       "unchanged");
}

TEST_CASE("train config: a string that would be recorded changed is an error naming its key") {
  // A carriage return at the end of a plain scalar: yaml-cpp wrote it unquoted and read the
  // recorded configuration back without it, so a resumed run would have used another path.
  CHECK_ERROR_CONTAINS(parse_train_config("model:\n  path: \"/models/m\\r\"\n", "run.yaml", {}, "/configs"),
                       "run.yaml:2: 'model.path' cannot be written back as YAML unchanged");
  CHECK_ERROR_CONTAINS(parse_train_config("model: {path: m}\neval: {tasks: [boolq, \"cb\\r\"]}\n", "run.yaml", {},
                                          "/configs"),
                       "run.yaml:2: 'eval.tasks' cannot be written back");
  CHECK_ERROR_CONTAINS(parse_train_config("model: {path: m}\n", "run.yaml", {"output_dir=runs/a\r"}, "/configs"),
                       "run.yaml: command-line override: 'output_dir' cannot be written back");
  // In a data section, which is kept as YAML and read by data/, keys and values are checked alike.
  CHECK_ERROR_CONTAINS(parse_train_config("model: {path: m}\ndata:\n  datasets:\n    - {name: \"a\\r\"}\n",
                                          "run.yaml", {}, "/configs"),
                       "run.yaml:4: 'data.datasets[0].name' cannot be written back as YAML unchanged");
  // What passes is recorded as read.
  const TrainConfig ok = parse_train_config("model: {path: \"/models/\\u65e5 m\"}\ndata: {packing: {seq_len: 8}}\n",
                                            "run.yaml", {}, "/configs");
  CHECK(ok.model.path == "/models/\xe6\x97\xa5 m");
  CHECK(to_yaml(parse_train_config(to_yaml(ok), "again.yaml", {}, "")) == to_yaml(ok));
}

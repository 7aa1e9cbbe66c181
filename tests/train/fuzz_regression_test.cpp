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
  // (mlr-train writes config.resolved.yaml first) threw YAML::ParserException.
  std::ifstream in(std::string(MLR_SOURCE_DIR) + "/tests/fixtures/train/fuzz_data_section_not_utf8.yaml", std::ios::binary);
  REQUIRE(in.good());
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string text = buffer.str();
  CHECK_ERROR_CONTAINS(parse_train_config(text, "run.yaml", {}, "/configs"),
                       "'data' cannot be written back as YAML (is its text valid UTF-8?)");
}

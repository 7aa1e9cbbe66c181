// tokenizer.backend in the mlr-train configuration: default, override, the resolved YAML round
// trip (what a run directory records), and the error for an unknown backend.
#include <doctest/doctest.h>

#include "tests/test_support.h"
#include "train/config.h"

using namespace mlr;

namespace {
const char* kBackendYaml = R"(model:
  path: ckpt
data:
  datasets:
    - {name: boolq, format: boolq, path: boolq/val.jsonl}
)";
}

TEST_CASE("train config: tokenizer.backend") {
  CHECK(parse_train_config(kBackendYaml, "run.yaml", {}, "").tokenizer.backend == "transformers");
  const TrainConfig sp = parse_train_config(kBackendYaml, "run.yaml", {"tokenizer.backend=sentencepiece"}, "");
  CHECK(sp.tokenizer.backend == "sentencepiece");
  CHECK(parse_train_config(to_yaml(sp), "resolved.yaml", {}, "").tokenizer.backend == "sentencepiece");
  CHECK_ERROR_CONTAINS(parse_train_config(kBackendYaml, "run.yaml", {"tokenizer.backend=spm"}, ""),
                       "must be transformers or sentencepiece");
}

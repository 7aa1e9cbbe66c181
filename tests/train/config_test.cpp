// mlr-train configuration: defaults, overrides, the resolved YAML round trip, and errors that name
// the file, line and key.
#include <doctest/doctest.h>

#include "data/config.h"
#include "train/config.h"

using namespace mlr;

namespace {
const char* kYaml = R"(model:
  path: ckpt
  device: cpu
adapter:
  type: multilora
  r: 32
  n_modules: 4
  target_modules: [q_proj, v_proj, o_proj]
data:
  seed: 7
  datasets:
    - {name: boolq, format: boolq, path: boolq/val.jsonl}
train:
  steps: 50
  grad_accum: 2
optim:
  lr: 1.0e-4
  schedule: linear
output_dir: runs/x
)";
}

TEST_CASE("train config: values, defaults and relative paths") {
  const TrainConfig c = parse_train_config(kYaml, "run.yaml", {}, "/configs");
  CHECK(c.model.path == "/configs/ckpt");
  CHECK(c.model.device == "cpu");
  CHECK(c.adapter.type == "multilora");
  CHECK(c.adapter.r == 32);
  CHECK(c.adapter.n_modules == 4);
  CHECK(c.adapter.target_modules == std::vector<std::string>{"q_proj", "v_proj", "o_proj"});
  CHECK(c.adapter.alpha == 16);  // default
  CHECK(c.train.steps == 50);
  CHECK(c.train.grad_accum == 2);
  CHECK(c.optim.lr == doctest::Approx(1e-4));
  CHECK(c.optim.schedule == "linear");
  CHECK(c.output_dir == "runs/x");
  CHECK(c.data_yaml.find("boolq/val.jsonl") != std::string::npos);
}

TEST_CASE("train config: key=value overrides keep their YAML types and create sections") {
  const TrainConfig c = parse_train_config(
      kYaml, "run.yaml",
      {"optim.lr=3e-4", "adapter.type=smora", "adapter.top_k=2", "adapter.target_modules=[k_proj,down_proj]",
       "save.interval=10", "train.activation_checkpointing=true"},
      "");
  CHECK(c.optim.lr == doctest::Approx(3e-4));
  CHECK(c.adapter.type == "smora");
  CHECK(c.adapter.top_k == 2);
  CHECK(c.adapter.target_modules == std::vector<std::string>{"k_proj", "down_proj"});
  CHECK(c.save.interval == 10);
  CHECK(c.train.activation_checkpointing);
}

TEST_CASE("train config: the resolved YAML parses back to the same values") {
  const TrainConfig c = parse_train_config(kYaml, "run.yaml", {"optim.warmup_steps=5"}, "");
  const TrainConfig back = parse_train_config(to_yaml(c), "resolved.yaml", {}, "");
  CHECK(to_yaml(back) == to_yaml(c));
  CHECK(back.optim.warmup_steps == 5);
  CHECK(back.adapter.target_modules == c.adapter.target_modules);
}

TEST_CASE("train config: errors name the file, line and key") {
  auto fails_with = [](const std::string& yaml, const std::vector<std::string>& overrides, const std::string& text) {
    CHECK_THROWS_WITH_AS(parse_train_config(yaml, "run.yaml", overrides, ""), doctest::Contains(text.c_str()), std::exception);
  };
  fails_with(kYaml, {"optim.lrr=1"}, "unknown key 'optim.lrr'");
  fails_with(kYaml, {"optim.lr=abc"}, "command-line override: 'optim.lr' is \"abc\", expected a number");
  fails_with("model: {path: x}\ntrain:\n  steps: -3\n", {}, "run.yaml:3: 'train.steps' must be positive");
  fails_with(kYaml, {"adapter.r=30"}, "'adapter.r' 30 is not divisible by n_modules 4");
  fails_with(kYaml, {"adapter.target_modules=[qproj]"}, "has \"qproj\"");
  fails_with(kYaml, {"train.precision=fp8"}, "'train.precision' is \"fp8\", expected one of");
  fails_with("train: {steps: 3}\n", {}, "'model.path' is required");
  fails_with(kYaml, {"optim.lr"}, "expected key=value");
  fails_with("model: [1, 2\n", {}, "run.yaml:");
}

TEST_CASE("the example configurations in configs/ parse, data sections included") {
  for (const char* name : {"demo", "lora", "multilora", "smora", "full"}) {
    CAPTURE(name);
    const std::string path = std::string(MLR_SOURCE_DIR) + "/configs/" + name + ".yaml";
    const TrainConfig c = load_train_config(path, {});
    CHECK(!c.data_yaml.empty());
    const data::DataConfig d = data::parse_data_config(c.data_yaml, path, c.base_dir);
    CHECK(!d.datasets.empty());
    if (!c.eval.data_yaml.empty()) CHECK(!data::parse_data_config(c.eval.data_yaml, path, c.base_dir).datasets.empty());
  }
}

TEST_CASE("train config: adapter.init_from resolves against the file and is refused for full fine-tuning") {
  const TrainConfig c = parse_train_config(kYaml, "run.yaml", {"adapter.init_from=adapters/a"}, "/configs");
  CHECK(c.adapter.init_from == "/configs/adapters/a");
  CHECK_THROWS_WITH_AS(parse_train_config(kYaml, "run.yaml", {"adapter.type=full", "adapter.init_from=x"}, ""),
                       doctest::Contains("'adapter.init_from' applies to adapters"), std::exception);
}

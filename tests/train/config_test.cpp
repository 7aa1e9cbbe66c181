// mlr-train configuration: defaults, overrides, the resolved YAML round trip, and errors that name
// the file, line and key.
#include <doctest/doctest.h>

#include "data/config.h"
#include "multilora/dora.h"
#include "multilora/multilora.h"
#include "multilora/smora.h"
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
  REQUIRE(c.adapter.settings != nullptr);
  CHECK(&c.adapter.settings->type() == &multilora_adapter_type());
  const auto& multilora = dynamic_cast<const MultiLoraConfig&>(*c.adapter.settings);
  CHECK(multilora.r == 32);
  CHECK(multilora.n_modules == 4);
  CHECK(c.adapter.target_modules == std::vector<std::string>{"q_proj", "v_proj", "o_proj"});
  CHECK(multilora.alpha == 16);  // the run configuration's default
  CHECK(multilora.scale_mode == MultiLoraScale::per_module);
  CHECK(multilora.init == MultiLoraInit::kaiming_uniform);
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
       "save.interval=10", "train.activation_checkpointing=true", "train.zero_stage=1",
       "train.overlap_grad_reduce=false", "train.grad_bucket_mib=4"},
      "");
  CHECK(c.optim.lr == doctest::Approx(3e-4));
  CHECK(c.adapter.type == "smora");
  CHECK(dynamic_cast<const SmoraConfig&>(*c.adapter.settings).top_k == 2);
  CHECK(c.adapter.target_modules == std::vector<std::string>{"k_proj", "down_proj"});
  CHECK(c.save.interval == 10);
  CHECK(c.train.activation_checkpointing);
  CHECK(c.train.zero_stage == 1);
  CHECK(parse_train_config(to_yaml(c), "resolved.yaml", {}, "").train.zero_stage == 1);
  CHECK_FALSE(c.train.overlap_grad_reduce);
  CHECK_FALSE(parse_train_config(to_yaml(c), "resolved.yaml", {}, "").train.overlap_grad_reduce);
  CHECK(parse_train_config(to_yaml(c), "resolved.yaml", {}, "").train.grad_bucket_mib == 4);
}

TEST_CASE("train config: every adapter type's keys, and the resolved YAML of each") {
  const TrainConfig per_channel =
      parse_train_config(kYaml, "run.yaml", {"adapter.scale_mode=per_channel", "adapter.init=gaussian"}, "");
  const auto& m = dynamic_cast<const MultiLoraConfig&>(*per_channel.adapter.settings);
  CHECK(m.scale_mode == MultiLoraScale::per_channel);
  CHECK(m.init == MultiLoraInit::gaussian);
  for (const AdapterType* type : adapter_types()) {
    CAPTURE(type->name);
    const TrainConfig c = parse_train_config(kYaml, "run.yaml", {"adapter.type=" + type->name, "adapter.r=8"}, "");
    REQUIRE(c.adapter.settings != nullptr);
    CHECK(&c.adapter.settings->type() == type);
    const TrainConfig back = parse_train_config(to_yaml(c), "resolved.yaml", {}, "");
    CHECK(to_yaml(back) == to_yaml(c));
    CHECK(back.adapter.settings->yaml_fields() == c.adapter.settings->yaml_fields());
  }
  const TrainConfig dora = parse_train_config(kYaml, "run.yaml", {"adapter.type=dora", "adapter.rslora=true"}, "");
  CHECK(dynamic_cast<const DoraConfig&>(*dora.adapter.settings).use_rslora);
  CHECK(parse_train_config(kYaml, "run.yaml", {"adapter.type=full"}, "").adapter.settings == nullptr);
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
  // r % n_modules: the library's rule (an uneven split, larger ranks first; at least one rank each).
  const TrainConfig uneven = parse_train_config(kYaml, "run.yaml", {"adapter.r=30"}, "");
  CHECK(multilora_ranks(dynamic_cast<const MultiLoraConfig&>(*uneven.adapter.settings)) ==
        std::vector<int64_t>{8, 8, 7, 7});
  fails_with(kYaml, {"adapter.r=3"}, "'adapter.r' does not fit: multilora: total rank 3 cannot be split over 4 modules");
  // The MultiLoRA scale mode and init use adapter_config.json's words.
  fails_with(kYaml, {"adapter.scale=scalar"}, "'adapter.scale' was renamed scale_mode");
  fails_with(kYaml, {"adapter.init=kaiming"}, "'adapter.init' is \"kaiming\", expected one of: gaussian, kaiming_uniform");
  fails_with(kYaml, {"adapter.type=ia3"}, "'adapter.type' is \"ia3\", expected one of: dora, full, lora, multilora, smora");
  fails_with(kYaml, {"adapter.target_modules=[qproj]"}, "has \"qproj\"");
  fails_with(kYaml, {"train.precision=fp8"}, "'train.precision' is \"fp8\", expected one of");
  fails_with(kYaml, {"train.zero_stage=3"}, "'train.zero_stage' must be 0 (replicated optimizer state), 1");
  fails_with(kYaml, {"train.zero_stage=2", "train.precision=fp16"}, "'train.zero_stage' 2 does not combine with precision fp16");
  fails_with(kYaml, {"train.grad_bucket_mib=0"}, "'train.grad_bucket_mib' must be a positive size in MiB, got 0");
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

TEST_CASE("train config: train.threads and train.peak_flops (defaults, round trip, range errors)") {
  const TrainConfig d = parse_train_config(kYaml, "run.yaml", {}, "");
  CHECK(d.train.threads == 0);
  CHECK(d.train.peak_flops == 0.0);
  const TrainConfig c = parse_train_config(kYaml, "run.yaml", {"train.threads=3", "train.peak_flops=1.8e11"}, "");
  CHECK(c.train.threads == 3);
  CHECK(c.train.peak_flops == doctest::Approx(1.8e11));
  const TrainConfig back = parse_train_config(to_yaml(c), "resolved.yaml", {}, "");
  CHECK(back.train.threads == 3);
  CHECK(back.train.peak_flops == doctest::Approx(1.8e11));
  CHECK_THROWS_WITH_AS(parse_train_config(kYaml, "run.yaml", {"train.threads=-1"}, ""),
                       doctest::Contains("threads"), std::exception);
  CHECK_THROWS_WITH_AS(parse_train_config(kYaml, "run.yaml", {"train.peak_flops=-5"}, ""),
                       doctest::Contains("peak_flops"), std::exception);
}

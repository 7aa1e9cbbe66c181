// A custom adapter type, trained and evaluated with the mlr library from a program of its own.
//
// Gated LoRA: LoRA whose update passes through one trainable scalar gate per layer, started at 0
// (so the model starts as the base model, as LoRA's B = 0 makes it), while A and B both start
// random, so every factor receives a gradient from the first step on:
//   y = W0 x (+ bias) + g * s * B A x        A [r, in], B [out, r] random, g [1] = 0, s = alpha / r
//   dW = g * s * B A                         (merge adds it to W0)
// Files: PEFT's layout with peft_type "GATED_LORA" and one more tensor per module, lora_gate [1].
//
// The program registers the type with the library's adapter registry, trains it with the library's
// trainer (mlr::run_training) on a BoolQ-format JSONL file, loads the adapter file it wrote back
// through the registry, and scores the base model and the adapted one on a held-out BoolQ-format
// file the way lm-evaluation-harness scores BoolQ.
//
//   custom_adapter MODEL_DIR TRAIN.jsonl EVAL.jsonl OUTPUT_DIR [STEPS]
#include <cmath>
#include <iostream>
#include <memory>
#include <string>

#include <fmt/format.h>

#include "autograd/functions.h"
#include "eval/evaluator.h"
#include "eval/llama_scorer.h"
#include "eval/task_files.h"
#include "llama/model.h"
#include "llama/tokenizer.h"
#include "multilora/inject.h"
#include "multilora/lora.h"
#include "multilora/registry.h"
#include "tensor/ops.h"
#include "train/config.h"
#include "train/trainer.h"

using namespace mlr;

namespace {

const AdapterType& gated_lora_type();

struct GatedLoraConfig : AdapterConfig {
  int64_t r = 4;
  double alpha = 8;
  const AdapterType& type() const override { return gated_lora_type(); }
  std::unique_ptr<AdaptedLinear> make_adapter(Variable weight, Variable bias, Generator& init,
                                              uint64_t dropout_seed) const override;
  nlohmann::json yaml_fields() const override { return {{"r", r}, {"alpha", alpha}}; }
};

class GatedLoraLinear : public AdaptedLinear {
 public:
  GatedLoraLinear(Variable weight, Variable bias, const GatedLoraConfig& config, Generator& gen, uint64_t seed)
      : AdaptedLinear(std::move(weight), std::move(bias)), config_(config), scaling_(config.alpha / config.r),
        dropout_gen_(seed) {
    TensorOptions opts(adapter_dtype_, weight_.device());
    Tensor a = empty({config.r, in_features()}, opts);
    kaiming_uniform_(a, std::sqrt(5.0), gen);
    Tensor b = empty({out_features(), config.r}, opts);
    kaiming_uniform_(b, std::sqrt(5.0), gen);
    A_ = Variable::leaf(a, true, "lora_A.weight");
    B_ = Variable::leaf(b, true, "lora_B.weight");
    gate_ = Variable::leaf(zeros({1}, opts), true, "lora_gate");
  }

  const AdapterType& type() const override { return gated_lora_type(); }
  Generator& dropout_generator() override { return dropout_gen_; }
  Variable forward(const Variable& x) override {
    Variable base = base_forward(x);
    if (merged_) return base;
    return add_update(base, mul(lora_update(to_dtype(x, A_.dtype()), A_, B_, scaling_), gate_));
  }
  std::vector<std::pair<std::string, Variable>> named_tensors() const override {
    return {{"lora_A.weight", A_}, {"lora_B.weight", B_}, {"lora_gate", gate_}};
  }
  nlohmann::json config_json() const override {
    return {{"peft_type", "GATED_LORA"}, {"r", config_.r}, {"lora_alpha", json_number(config_.alpha)}};
  }
  Tensor delta_weight() const override {
    const double g = cast(gate_.data(), DType::f64).to_vector<double>()[0];
    return mul(matmul(cast(B_.data(), DType::f32), cast(A_.data(), DType::f32)), g * scaling_);
  }
  double gate() const { return cast(gate_.data(), DType::f64).to_vector<double>()[0]; }

 private:
  GatedLoraConfig config_;
  double scaling_;
  Variable A_, B_, gate_;
  Generator dropout_gen_;
};

std::unique_ptr<AdaptedLinear> GatedLoraConfig::make_adapter(Variable weight, Variable bias, Generator& init,
                                                             uint64_t dropout_seed) const {
  return std::make_unique<GatedLoraLinear>(std::move(weight), std::move(bias), *this, init, dropout_seed);
}

// The registration: YAML `adapter.type: gated_lora` with keys r and alpha; adapter_config.json with
// peft_type GATED_LORA.
const AdapterType& gated_lora_type() {
  static const AdapterType type{
      .name = "gated_lora",
      .display_name = "Gated LoRA",
      .peft_type = "GATED_LORA",
      .reads_file = {},
      .from_json = [](const nlohmann::json& file) -> std::shared_ptr<const AdapterConfig> {
        auto c = std::make_shared<GatedLoraConfig>();
        c->r = json_field<int64_t>(file, "r", "a positive integer");
        c->alpha = json_field<double>(file, "lora_alpha", "a number");
        return c;
      },
      .yaml_keys = {"r", "alpha"},
      .from_yaml = [](const ConfigFields& section) -> std::shared_ptr<const AdapterConfig> {
        auto c = std::make_shared<GatedLoraConfig>();
        section.integer("r", c->r);
        section.number("alpha", c->alpha);
        section.require(c->r > 0, "r", fmt::format("must be positive, got {}", c->r));
        return c;
      },
      .structural_fields = {"peft_type", "r", "lora_alpha"},
  };
  return type;
}

// BoolQ accuracy (lm-evaluation-harness's prompt and scoring) of `model` on `file`.
double boolq_accuracy(LlamaForCausalLM& model, const Tokenizer& tokenizer, const std::string& file,
                      const std::string& name) {
  const eval::LoadedTasks tasks = eval::load_named_tasks({"boolq"}, "", {{"boolq", file}});
  eval::LlamaContinuationModel lm(model);
  eval::TokenizedScorer scorer(tokenizer, lm, name);
  const eval::EvalResults results = eval::evaluate(tasks.tasks, tasks.groups, scorer);
  for (const eval::MetricValue& m : results.tasks.at(0).metrics)
    if (m.name == "acc") return m.value;
  throw Error("boolq: no acc metric");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5 || argc > 6) {
    std::cerr << "usage: custom_adapter MODEL_DIR TRAIN.jsonl EVAL.jsonl OUTPUT_DIR [STEPS]\n";
    return 2;
  }
  const std::string model_dir = argv[1], train_file = argv[2], eval_file = argv[3], output_dir = argv[4];
  const int steps = argc > 5 ? std::stoi(argv[5]) : 30;
  try {
    register_adapter_type(gated_lora_type());

    const std::string yaml = fmt::format(R"(
model: {{path: "{0}", device: cpu}}
adapter: {{type: gated_lora, r: 4, alpha: 8, target_modules: [q_proj, k_proj, v_proj, o_proj]}}
data:
  tokenizer: "{0}"
  seed: 1
  packing: {{seq_len: 128, batch_rows: 4}}
  datasets:
    - {{name: train, format: boolq, path: "{1}"}}
train: {{steps: {2}}}
optim: {{lr: 1.0e-2, schedule: constant}}
log: {{interval: 10, tensorboard: false}}
output_dir: "{3}"
seed: 1
)", model_dir, train_file, steps, output_dir);
    const TrainConfig config = parse_train_config(yaml, "custom_adapter.yaml", {}, ".");
    TrainOptions options;
    options.progress_bar = false;
    const TrainReport report = run_training(config, options);
    std::cout << fmt::format("trained gated_lora for {} steps: loss {:.4f} -> {:.4f}; adapter in {}\n",
                             report.steps_done, report.losses.front(), report.losses.back(), report.final_dir);

    auto tokenizer = load_tokenizer(model_dir);
    auto model = LlamaForCausalLM::from_pretrained(model_dir);
    const double base_acc = boolq_accuracy(*model, *tokenizer, eval_file, "base");
    // The adapter file names its type; the registry finds ours.
    const auto adapters = inject_adapter_from_file(*model, report.final_dir);
    double mean_gate = 0;
    for (const NamedAdapter& a : adapters) mean_gate += std::fabs(dynamic_cast<const GatedLoraLinear&>(*a.adapter).gate());
    mean_gate /= static_cast<double>(adapters.size());
    const double adapted_acc = boolq_accuracy(*model, *tokenizer, eval_file, "gated_lora");
    std::cout << fmt::format("{} modules, mean |gate| {:.4f}\n", adapters.size(), mean_gate);
    std::cout << fmt::format("boolq acc on {}: base {:.4f}, gated_lora {:.4f}\n", eval_file, base_acc, adapted_acc);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

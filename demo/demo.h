// The built-in demo (mlr-demo, scripts/setup.sh): the paper's question answered end to end on a
// machine without a GPU in minutes, with nothing downloaded.
//
//   1. a synthetic world and a multi-task dataset in public formats (world.h)
//   2. a byte-level BPE tokenizer learned from its text (bpe_trainer.h)
//   3. a small LLaMA pretrained from random weights by the trainer (full training) on the
//      pretraining corpus, saved as a Hugging Face checkpoint with its tokenizer (base/)
//   4. LoRA, MultiLoRA and SMoRA at the same rank budget (the same A/B parameter count), and full
//      fine-tuning, trained on the mixture of the four families' training splits
//   5. per-family held-out accuracy of the base model and of each method through eval/ (the
//      harness's prompts and scoring), the singular-value spectra of each method's update, greedy
//      sample generations
//   6. index.html (tables and SVG plots inline) and the same tables on stdout
//
// Every run is an ordinary mlr-train configuration written to <out>/configs/, so each step can be
// rerun or varied with mlr-train, mlr-eval and mlr-analyze by hand.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <string>
#include <vector>

namespace mlr::demo {

struct DemoOptions {
  std::filesystem::path out_dir = "demo_out";
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  uint64_t seed = 1;
  bool quick = false;  // a short context, a small world, 250 + 100 steps: every stage in about 30 s of CPU
  // Overrides of the settings (0: the default of the mode).
  int64_t pretrain_steps = 0, finetune_steps = 0, eval_limit = 0;
};

struct MethodResult {
  std::string name;                 // base, lora, multilora, smora, full
  std::string label;                // LoRA r=8, ...
  int64_t trainable_parameters = 0;  // 0 for the base model
  double train_seconds = 0.0, final_loss = 0.0;
  std::vector<double> losses;
  std::vector<double> accuracy;     // per family, in DemoReport::families order
  double eval_seconds = 0.0;
  // Spectrum of the update (not for the base model).
  double mean_effective_rank = 0.0, mean_entropy = 0.0, mean_top1_energy = 0.0, mean_top4_energy = 0.0;
  int64_t matrices = 0;
  std::vector<std::pair<std::string, std::string>> samples;  // (prompt, greedy continuation)
};

struct FamilySummary {
  std::string name, shape, format, metric;
  double chance = 0.0;
  int64_t n_train = 0, n_test = 0;
};

struct DemoReport {
  std::vector<FamilySummary> families;
  std::vector<MethodResult> methods;  // base first
  std::string model_summary;          // e.g. "LLaMA 4 layers, hidden 128, ..."
  std::string device;
  double pretrain_seconds = 0.0, total_seconds = 0.0;
  std::vector<double> pretrain_losses;
  std::string spectra_svg;
};

// Runs the whole demo; progress goes to `log`. Throws mlr::Error on failure.
DemoReport run_demo(const DemoOptions& options, std::ostream& log);

// The tables as text (what the terminal shows) and the page.
std::string report_tables(const DemoReport& report);
std::string report_html(const DemoReport& report);

}  // namespace mlr::demo

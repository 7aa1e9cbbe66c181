// mlr-train: fine-tune a LLaMA-family checkpoint with an adapter (LoRA, MultiLoRA, SMoRA, DoRA: any
// type of multilora/registry.h) or full fine-tuning on a mixture of datasets. Thin: parses the command line, loads the YAML configuration with its
// key=value overrides, and calls mlr::run_training (train/trainer.h).
//
//   mlr-train configs/multilora.yaml optim.lr=1e-4 train.steps=2000
//   mlr-train configs/multilora.yaml --resume          # continue from the newest checkpoint
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "tensor/error.h"
#include "train/config.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"mlr-train: LoRA / MultiLoRA / SMoRA / DoRA / full fine-tuning of LLaMA-family models"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false, no_bar = false;
  app.add_option("config", config_path, "YAML configuration (see configs/README.md)")->required();
  app.add_option("overrides", overrides, "key=value overrides, e.g. optim.lr=1e-4 adapter.r=16");
  app.add_flag("--resume", resume, "continue from the newest complete checkpoint in output_dir");
  app.add_flag("--no-progress-bar", no_bar, "no progress bar on stderr");
  CLI11_PARSE(app, argc, argv);
  try {
    const mlr::TrainConfig config = mlr::load_train_config(config_path, overrides);
    mlr::install_training_signal_handlers();
    mlr::TrainOptions options;
    options.resume = resume;
    options.progress_bar = !no_bar;
    const mlr::TrainReport report = mlr::run_training(config, options);
    return report.interrupted ? 130 : 0;
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}

// mlr-train: fine-tune a LLaMA-family checkpoint with an adapter (LoRA, MultiLoRA, SMoRA, DoRA: any
// type of multilora/registry.h) or full fine-tuning on a mixture of datasets. Thin: parses the command line, loads the YAML configuration with its
// key=value overrides, and calls mlr::run_training (train/trainer.h).
//
//   mlr-train configs/multilora.yaml optim.lr=1e-4 train.steps=2000
//   mlr-train configs/multilora.yaml --resume          # continue from the newest checkpoint
//   torchrun --nproc_per_node 8 mlr-train cfg.yaml     # data parallel (also srun, mpirun,
//                                                      # scripts/launch_cpu_ranks.sh; dist/)
//   mlr-train cfg.yaml --plan --world-size 8           # bytes per rank, no GPU or weights needed
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "tensor/error.h"
#include "train/config.h"
#include "train/memory_plan.h"
#include "train/trainer.h"

int main(int argc, char** argv) {
  CLI::App app{"mlr-train: LoRA / MultiLoRA / SMoRA / DoRA / full fine-tuning of LLaMA-family models"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool resume = false, no_bar = false, plan = false;
  int64_t world_size = std::getenv("WORLD_SIZE") ? std::atoll(std::getenv("WORLD_SIZE")) : 1;
  double device_gib = 80;
  app.add_option("config", config_path, "YAML configuration (see configs/README.md)")->required();
  app.add_option("overrides", overrides, "key=value overrides, e.g. optim.lr=1e-4 adapter.r=16");
  app.add_flag("--resume", resume, "continue from the newest complete checkpoint in output_dir");
  app.add_flag("--no-progress-bar", no_bar, "no progress bar on stderr");
  app.add_flag("--plan", plan, "print the memory per rank (weights, adapters, optimizer, activations, buffers) and exit");
  app.add_option("--world-size", world_size, "ranks for --plan (default: WORLD_SIZE, else 1)")->check(CLI::PositiveNumber);
  app.add_option("--device-memory", device_gib, "GiB per device for --plan's fits line (default 80)")->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  try {
    const mlr::TrainConfig config = mlr::load_train_config(config_path, overrides);
    if (plan) {
      mlr::print_memory_plan(config, world_size, device_gib * double(int64_t{1} << 30), std::cout);
      return 0;
    }
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

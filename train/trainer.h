// The training run behind mlr-train: model + adapters + data mixture + AdamW, with mixed
// precision, gradient accumulation, clipping, schedules, periodic held-out evaluation, logs
// (stdout lines, JSONL, TensorBoard) and atomic checkpoints that resume exactly.
//
// Outputs in config.output_dir:
//   config.resolved.yaml     the configuration after overrides and defaults
//   metrics.jsonl            one line per logged step and per evaluation
//   tensorboard/             event files
//   checkpoints/step-N/      trainable weights (adapter files, or the full model), optimizer.safetensors
//                            + trainer_state.json (optimizer scalars, schedule, loss scaler, loader
//                            position, RNG state, step)
//   final/                   the trainable weights at the end (adapter directory or HF checkpoint)
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <vector>

#include "train/config.h"

namespace mlr {

struct TrainOptions {
  bool resume = false;       // continue from the newest complete checkpoint in output_dir
  std::ostream* out = nullptr;  // progress lines (default: stdout)
  bool progress_bar = true;  // also draw a bar on stderr when it is a terminal
};

struct TrainReport {
  int64_t start_step = 0;  // the step the run started from (0, or the resumed checkpoint's)
  int64_t steps_done = 0;  // the step count at the end
  std::vector<double> losses;  // training loss of every step run here
  std::vector<double> heldout_losses;
  bool interrupted = false;  // stopped by SIGINT/SIGTERM (a checkpoint was saved)
  std::string final_dir;     // the final weights (empty when interrupted)
};

TrainReport run_training(const TrainConfig& config, const TrainOptions& options = {});

// Asks a running training loop to save a checkpoint and return after the current step (what the
// SIGINT/SIGTERM handler of mlr-train calls; async-signal-safe).
void request_training_stop();
void install_training_signal_handlers();

}  // namespace mlr

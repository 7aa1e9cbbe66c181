// trainer_state.json of a training checkpoint (checkpoints/step-N/, next to the weights and
// optimizer.safetensors): the scalars that mlr-train --resume restores.
//
//   {"step": N, "optimizer": {AdamW scalars}, "lr_schedule": {...}, "loss_scaler": {...},
//    "loader": {LoaderState}, "rng": {"seed": s, "offset": o},
//    "data_parallel": {"world_size": W, "rows_per_rank": R, "global_rows": W * R},
//    "adapter_dropout_rng": {"<module path>": [seed, offset], ...},      (adapters with dropout)
//    "<an adapter type's training_state_key()>": {"<module path>": <that adapter's JSON>, ...}}
//    (SMoRA: "smora_total_counts": {"<module path>": [count per rank], ...})
//
// Parsing checks the structure and every scalar's type and range here; the optimizer and loss
// scaler objects are checked by their owners' load_state_dict, and each adapter type's entries by its
// restore_training_state (the trainer names the key and the module). Errors name the file and the key.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/loader.h"

namespace mlr {

struct TrainerState {
  int64_t step = 0;               // optimizer steps done (>= 0)
  nlohmann::json optimizer;       // AdamW::load_state_dict checks its contents
  nlohmann::json loss_scaler;     // DynamicLossScaler::load_state_dict checks its contents
  data::LoaderState loader;
  uint64_t rng_seed = 0, rng_offset = 0;  // the default generator
  // "tokenizer": {"backend", "fingerprint"}: the tokenizer the data positions refer to (empty in
  // checkpoints written before it was recorded).
  std::string tokenizer_backend, tokenizer_fingerprint;
  // "data_parallel": {"world_size", "rows_per_rank", "global_rows"}: how the run that wrote it split
  // its global micro-batch (0 in checkpoints written before it was recorded).
  int64_t world_size = 0, global_rows = 0;
  // By module path; absent when the run had no such adapters.
  std::optional<std::map<std::string, std::pair<uint64_t, uint64_t>>> adapter_dropout_rng;
  // Every other top-level key: an adapter type's state, {module path: JSON}; empty without such adapters.
  std::map<std::string, std::map<std::string, nlohmann::json>> adapter_training_state;
};

// `path` names the file in errors.
TrainerState parse_trainer_state(const std::string& text, const std::string& path);
TrainerState read_trainer_state(const std::string& path);

}  // namespace mlr

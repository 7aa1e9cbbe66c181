// `mlr-train --plan`: the bytes per rank of a run (dist/memory_plan.h) from its configuration, the
// model's config.json (no weights needed: model.path may hold config.json alone) and the adapter
// section; no GPU needed.
#pragma once

#include <cstdint>
#include <iosfwd>

#include "train/config.h"

namespace mlr {

// Prints the plan of `config` on `world_size` ranks, and whether it fits `device_bytes` per rank.
void print_memory_plan(const TrainConfig& config, int64_t world_size, double device_bytes, std::ostream& out);

}  // namespace mlr

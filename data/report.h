// What `mlr-data prepare` and `mlr-data inspect` print: per-dataset counts, token totals and
// truncations, the requested and realised mixture, and examples rendered from real batches with
// the part that carries no loss marked.
#pragma once

#include <iosfwd>
#include <memory>
#include <vector>

#include "data/config.h"

namespace mlr::data {

// Prepares every dataset of the configuration (loads its cache or builds it), in order.
std::vector<std::shared_ptr<const TokenizedDataset>> prepare_all(const DataConfig& config, const Tokenizer& tokenizer);

// Per dataset: examples, skipped rows, tokens, target tokens, longest example, and how many
// examples exceed seq_len (truncated / left without a target token).
void write_dataset_table(std::ostream& out, const DataConfig& config,
                         const std::vector<std::shared_ptr<const TokenizedDataset>>& datasets);

struct InspectOptions {
  int64_t batches = 100;  // loader batches drawn for the realised mixture
  int examples = 3;       // examples rendered (from the first batch)
};

// The realised mixture over `batches` batches of the configured loader (share of examples and of
// target tokens per dataset against the requested rate), truncations met on the way, then
// rendered examples: "masked |" lines carry no loss, "target |" lines are trained on.
void write_mixture_report(std::ostream& out, const DataConfig& config,
                          const std::vector<std::shared_ptr<const TokenizedDataset>>& datasets, const Tokenizer& tokenizer,
                          const InspectOptions& options);

}  // namespace mlr::data

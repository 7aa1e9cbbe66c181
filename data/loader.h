// The loader: mixture sampler -> fit (truncation) -> packer -> batches, produced ahead of use by a
// background thread, sharded over data-parallel ranks, resumable.
//
// Every rank runs the same sampler and packer over the global batch of world_size * batch_rows
// rows and keeps rows [rank * batch_rows, (rank + 1) * batch_rows): ranks see disjoint rows, and
// one state, identical on every rank, describes the position of all of them. The state after
// batch k is the sampler's position at the end of that batch; an example drawn but not placed
// (it did not fit the last row) is not part of the state and is drawn again on resume. So a
// loader built from the state saved after batch k produces batch k+1 exactly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/cache.h"
#include "data/mixture.h"
#include "data/packing.h"
#include "data/tokenize.h"

namespace mlr::data {

struct LoaderOptions {
  int64_t batch_rows = 8;  // rows per rank per step
  PackOptions pack;
  Truncation truncation = Truncation::right;
  bool drop_overlong = false;  // drop (and count) examples with no target token within seq_len
  int rank = 0, world_size = 1;
  int prefetch = 4;  // batches produced ahead by the background thread; 0: no thread
};

// The position of a loader, for the training checkpoint.
struct LoaderState {
  int64_t step = 0;  // batches produced
  MixtureState mixture;
  int64_t truncated = 0, dropped = 0;  // examples so far, over all ranks
  std::string fingerprint;             // what the state is valid for (datasets, seed, shapes)

  std::string to_json() const;
  // `where` names the source in errors (a checkpoint file).
  static LoaderState from_json(const std::string& text, const std::string& where);
  bool operator==(const LoaderState&) const = default;
};

class Loader {
 public:
  // datasets[i] is mixed as sources[i] (its size is taken from the dataset). Starts from the
  // beginning, or from `resume` (a state saved by a loader with the same datasets and options).
  Loader(std::vector<std::shared_ptr<const TokenizedDataset>> datasets, std::vector<MixtureSource> sources,
         const MixtureOptions& mixture, const LoaderOptions& options, const LoaderState* resume = nullptr);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // The next batch of this rank. Rethrows an error of the producer (e.g. an example whose
  // prompt does not fit seq_len), naming the example.
  Batch next();
  // The state after the last batch next() returned (the initial state before the first).
  LoaderState state() const;
  const MixtureSampler& sampler() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlr::data

// Sharded frozen base: each rank keeps 1/world of every frozen weight of the decoder layers (the
// flattened tensor, padded to a multiple of world, split in world chunks) and all-gathers a layer's
// weights just before the layer runs; after the layer the full weights are released (the
// parameter then holds a broadcast zero of the right shape, no memory). The model calls the
// gather and release around every run of a layer (LlamaModel::before_layer / after_layer),
// recomputations of activation checkpointing included.
//
// Memory: with activation checkpointing, the forward keeps no graph, so a gathered layer is freed
// as soon as it has run, and the backward's recompute gathers it again and frees it with that
// block's graph: about one full layer at a time. Without checkpointing the graph of every layer
// keeps its full weights until backward reaches it (correct, but no saving). The embedding, the
// final norm and the output layer stay replicated.
//
// Prefetch (with a collective worker, dist/collective_worker.h): the gathers run on the worker's
// own connections, and after gathering layer l the next layer's all-gather is started at once, so
// it runs while layer l computes. The next layer is l+1 when the layers go up (forward) and l-1
// when they go down (the recompute of activation checkpointing runs the layers last to first); a
// layer gathered from its prefetch skips the wait. At most one layer is prefetched; a prefetch that
// turns out unused (the prediction missed: the end of a pass) is completed and dropped. Every rank
// gathers the same layers in the same order, so the worker's collectives match.
//
// Each rank still loads the whole model before sharding it (loading shards straight from the files
// is not built), so the saving is during training, not at load time.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "autograd/variable.h"
#include "dist/collective_worker.h"
#include "dist/communicator.h"
#include "llama/model.h"

namespace mlr::dist {

class ShardedFrozenBase {
 public:
  // Shards the parameters of every decoder layer of `model` that do not require grad, except
  // `keep_whole` (adapter tensors that are not trained by gradient, such as SMoRA's selection
  // bias, which their owners update in place), and installs the layer hooks. Every rank must hold
  // the same weights (they come from the same checkpoint).
  // With `prefetcher` (its communicator spans the same ranks), gathers go through it and the next
  // layer is prefetched; without, each gather is a blocking all-gather on comm.
  ShardedFrozenBase(Communicator& comm, LlamaForCausalLM& model, const std::vector<Variable>& keep_whole = {},
                    std::unique_ptr<CollectiveWorker> prefetcher = nullptr);
  // Removes the hooks and gathers every layer back (the model is whole again); while an exception
  // unwinds it only removes the hooks.
  ~ShardedFrozenBase();
  ShardedFrozenBase(const ShardedFrozenBase&) = delete;
  ShardedFrozenBase& operator=(const ShardedFrozenBase&) = delete;

  void gather(int64_t layer);
  void release(int64_t layer);
  // Bytes of the shards this rank keeps, and of the frozen layer weights they stand for.
  int64_t shard_bytes() const;
  int64_t full_bytes() const;

  // Test hook, on the calling thread: "prefetch <l>" (a gather started ahead), "gather <l>" or
  // "gather <l> prefetched" (a layer's weights installed), "release <l>".
  std::function<void(const std::string&)> on_event;

 private:
  // The full weights of one layer, being gathered.
  struct Gathering {
    int64_t layer = -1;
    std::vector<Tensor> full;  // per entry, the flattened, padded weight
    CollectiveWork work;       // invalid when gathered on the calling thread
  };
  Gathering start_gather(int64_t layer);
  void install(Gathering& g);
  void note(const std::string& event) const {
    if (on_event) on_event(event);
  }

  struct Entry {
    Variable param;
    Shape shape;
    Tensor shard;  // [chunk] of the flattened, padded tensor
  };
  Communicator& comm_;
  LlamaForCausalLM& model_;
  std::vector<std::vector<Entry>> layers_;
  std::unique_ptr<CollectiveWorker> prefetcher_;
  Gathering prefetched_;
  int64_t last_gathered_ = -1;
};

}  // namespace mlr::dist

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
// final norm and the output layer stay replicated. Gathers are not prefetched yet (the next
// layer's all-gather could overlap this layer's compute), and each rank loads the whole model
// before sharding it (loading shards straight from the files is not built), so the saving is
// during training, not at load time.
#pragma once

#include <cstdint>
#include <vector>

#include "autograd/variable.h"
#include "dist/communicator.h"
#include "llama/model.h"

namespace mlr::dist {

class ShardedFrozenBase {
 public:
  // Shards the parameters of every decoder layer of `model` that do not require grad, except
  // `keep_whole` (adapter tensors that are not trained by gradient, such as SMoRA's selection
  // bias, which their owners update in place), and installs the layer hooks. Every rank must hold
  // the same weights (they come from the same checkpoint).
  ShardedFrozenBase(Communicator& comm, LlamaForCausalLM& model, const std::vector<Variable>& keep_whole = {});
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

 private:
  struct Entry {
    Variable param;
    Shape shape;
    Tensor shard;  // [chunk] of the flattened, padded tensor
  };
  Communicator& comm_;
  LlamaForCausalLM& model_;
  std::vector<std::vector<Entry>> layers_;
};

}  // namespace mlr::dist

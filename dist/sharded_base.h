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
// Loading (load_with_sharded_base): each rank reads from the safetensors files only its chunk of
// every decoder-layer weight (one byte range of the file per weight: the tensors are row-major),
// and the model's decoder parameters never get memory of their own, so the peak at load time is
// 1/world of the decoder weights plus the replicated rest, as during training. A model loaded
// whole can also be sharded (the constructor without loaded shards slices the full weights).
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

// Which elements of a flattened weight of `numel` elements rank `rank` of `world` keeps: the
// weight padded to world * chunk elements, chunk `rank` of it; [begin, begin + count) are real
// elements (count < chunk in the last chunks when padding is needed, 0 past the end).
struct ShardRange {
  int64_t chunk = 0, begin = 0, count = 0;
};
ShardRange shard_range(int64_t numel, int64_t rank, int64_t world);

// One decoder weight read in part from the files: the parameter (it holds no memory) and this
// rank's chunk, zero-padded to the chunk size.
struct LoadedShard {
  std::string name;
  Variable param;
  Tensor shard;
};

struct ShardedLoad {
  std::shared_ptr<LlamaForCausalLM> model;
  std::vector<LoadedShard> shards;  // for ShardedFrozenBase's constructor
  int64_t bytes_read = 0;           // of the decoder weights, read from the files by this rank
  int64_t stored_bytes = 0;         // of the decoder weights in the files, all ranks' chunks together
};

// LlamaForCausalLM::from_pretrained(dir, dtype, device), except that every decoder-layer parameter
// (model.layers.*) is read only in part: rank `rank` of `world`'s chunk of it (shard_range). Those
// parameters must stay frozen (an adapter run; full fine-tuning trains them) and must not be read
// before ShardedFrozenBase takes the shards: an adapter whose initial values come from the base
// weight (AdapterType::initialises_from_base_weight, DoRA's magnitudes) is made awaiting it
// (InjectionSpec::defer_base_weight_reads) and initialised once the shards are installed, one
// gathered layer at a time (for_each_layer_gathered; train/trainer.cpp), or loaded from a file.
// Merging adapters into the base is not done here: a gathered layer is dropped at release, and a
// released weight refuses a merge (AdaptedLinear::merge); mlr-merge folds the saved adapter into
// the whole base.
ShardedLoad load_with_sharded_base(const std::string& dir, int64_t rank, int64_t world, DType dtype, Device device);

class ShardedFrozenBase {
 public:
  // Shards the parameters of every decoder layer of `model` that do not require grad, except
  // `keep_whole` (adapter tensors that are not trained by gradient, such as SMoRA's selection
  // bias, which their owners update in place), and installs the layer hooks. Every rank must hold
  // the same weights (they come from the same checkpoint).
  // With `prefetcher` (its communicator spans the same ranks), gathers go through it and the next
  // layer is prefetched; without, each gather is a blocking all-gather on comm.
  // `loaded`: the shards of a model from load_with_sharded_base (on the same ranks); each must be
  // of a parameter this constructor shards. Parameters without one are sliced from their values.
  ShardedFrozenBase(Communicator& comm, LlamaForCausalLM& model, const std::vector<Variable>& keep_whole = {},
                    std::unique_ptr<CollectiveWorker> prefetcher = nullptr, std::vector<LoadedShard> loaded = {});
  // Removes the hooks and gathers every layer back (the model is whole again); while an exception
  // unwinds, or after keep_released(), it only removes the hooks.
  ~ShardedFrozenBase();
  ShardedFrozenBase(const ShardedFrozenBase&) = delete;
  ShardedFrozenBase& operator=(const ShardedFrozenBase&) = delete;

  void gather(int64_t layer);
  void release(int64_t layer);
  // The destructor then only removes the hooks, and the model keeps its frozen layer weights
  // released (no values): for an owner whose model goes too, such as the end of a training run,
  // where a base too big for one rank would not fit whole.
  void keep_released() { keep_released_ = true; }
  // visit(l) for each of `layers` (increasing, every rank the same list: they are collectives)
  // while layer l alone is gathered, released after it: a pass over the whole base, one layer in
  // memory at a time (adapters initialised from their base weights, train/trainer.cpp).
  void for_each_layer_gathered(const std::vector<int64_t>& layers, const std::function<void(int64_t)>& visit);
  // Bytes of the shards this rank keeps, and of the frozen layer weights they stand for.
  int64_t shard_bytes() const;
  int64_t full_bytes() const;

  // Lockstep, for forward passes that not every rank makes: in evaluation each rank scores its own
  // share of the requests, so the ranks run different numbers of forwards, while every layer's
  // gather is a collective that all ranks must join in the same order. While lockstep is on:
  // - a pass runs the layers 0, 1, ..., n-1 in order (a no-grad forward, incremental decoding
  //   included); before its first gather (layer 0) the rank all-reduces a flag 1 ("I have a
  //   pass") on the base's communicator;
  // - a rank done with its own passes calls join_remaining_passes(): it all-reduces a flag 0, and
  //   while the sum is not 0 (some rank is starting a pass) it makes an idle pass, gathering and
  //   releasing every layer in a forward's order through the same code as a pass (prefetch
  //   included) without computing, then all-reduces again; a sum of 0 means every rank has
  //   joined, and all leave together.
  // Each round every rank contributes one flag and then gathers the same layers, so the flags, the
  // gathers and the prefetcher's collectives match on every rank. A layer gathered out of that
  // order (activation checkpointing's recompute: a forward under grad; a pass cut short) throws
  // at once, on the calling rank, instead of waiting on collectives the others never join. The
  // flags go over the base's communicator and its timeout, so a rank that dies in the middle
  // makes the others fail naming it, as in training.
  void begin_lockstep();
  void join_remaining_passes();
  // After join_remaining_passes() (every rank has joined); a pass must not be open.
  void end_lockstep();
  bool lockstep() const { return lockstep_; }
  // Since begin_lockstep(): the passes this rank made, its idle passes, and the most layers it
  // held whole at once (installed in the parameters; a layer being prefetched comes on top).
  struct LockstepCounts {
    int64_t passes = 0, idle_passes = 0, peak_whole_layers = 0;
  };
  const LockstepCounts& lockstep_counts() const { return lockstep_counts_; }

  // Test hook, on the calling thread: "prefetch <l>" (a gather started ahead), "gather <l>" or
  // "gather <l> prefetched" (a layer's weights installed), "release <l>"; in lockstep also
  // "pass" (this rank starts a pass), "join <sum>" (the flags of a round, this rank's 0) and
  // "idle pass".
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
  // gather()/release() without lockstep's bookkeeping (what an idle pass runs).
  void gather_layer(int64_t layer);
  void release_layer(int64_t layer);
  // Lockstep: checks a pass's order and agrees on the pass before its layer 0; the sum of every
  // rank's flag.
  void enter_lockstep_layer(int64_t layer);
  int64_t all_reduce_pass_flag(int64_t flag);
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
  std::vector<bool> whole_;  // per layer: installed in the parameters
  int64_t whole_layers_ = 0;
  bool keep_released_ = false;
  bool lockstep_ = false;
  bool pass_open_ = false;  // lockstep: layer 0 gathered, layer n-1 not yet released
  LockstepCounts lockstep_counts_;
};

}  // namespace mlr::dist

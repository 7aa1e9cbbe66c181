#include "dist/sharded_base.h"

#include <algorithm>
#include <exception>
#include <string>

#include <fmt/format.h>

#include "tensor/ops.h"

namespace mlr::dist {

namespace {

// What a released parameter holds: its shape, one zero broadcast (no memory).
Tensor placeholder(const Shape& shape, const Tensor& like) {
  Shape ones(shape.size(), 1);
  return zeros(ones, like.options()).expand(shape);
}

}  // namespace

ShardedFrozenBase::ShardedFrozenBase(Communicator& comm, LlamaForCausalLM& model, const std::vector<Variable>& keep_whole,
                                     std::unique_ptr<CollectiveWorker> prefetcher)
    : comm_(comm), model_(model), prefetcher_(std::move(prefetcher)) {
  const int64_t n_layers = model.config().num_hidden_layers;
  layers_.resize(static_cast<size_t>(n_layers));
  const int64_t world = comm_.world_size();
  for (const auto& named : model.named_parameters()) {
    const std::string& name = named.first;
    const Variable& param = named.second;
    if (param.requires_grad() || name.rfind("model.layers.", 0) != 0) continue;
    if (std::any_of(keep_whole.begin(), keep_whole.end(), [&](const Variable& v) { return v.is_same(param); })) continue;
    const size_t dot = name.find('.', 13);
    const int64_t layer = std::stoll(name.substr(13, dot - 13));
    MLR_CHECK(layer >= 0 && layer < n_layers, "sharded base: parameter {} names layer {} of {}", name, layer, n_layers);
    Entry e;
    e.param = param;
    e.shape = param.data().shape();
    const Tensor flat = param.data().contiguous().reshape({-1});
    const int64_t chunk = (flat.numel() + world - 1) / world;
    e.shard = zeros({chunk}, flat.options());
    const int64_t begin = std::min(flat.numel(), comm_.rank() * chunk);
    const int64_t len = std::min(flat.numel(), begin + chunk) - begin;
    if (len > 0) e.shard.narrow(0, 0, len).copy_(flat.narrow(0, begin, len));
    layers_[static_cast<size_t>(layer)].push_back(std::move(e));
  }
  for (int64_t l = 0; l < n_layers; ++l) release(l);
  model_.model->before_layer = [this](int64_t l) { gather(l); };
  model_.model->after_layer = [this](int64_t l) { release(l); };
}

ShardedFrozenBase::~ShardedFrozenBase() {
  model_.model->before_layer = nullptr;
  model_.model->after_layer = nullptr;
  if (std::uncaught_exceptions() > 0) return;  // failing: no collective the other ranks may never join
  try {
    if (prefetched_.work.valid()) prefetched_.work.wait();  // its collective was started on every rank
    for (size_t l = 0; l < layers_.size(); ++l) {
      Gathering g = start_gather(static_cast<int64_t>(l));
      install(g);
    }
  } catch (const std::exception&) {
    // a lost peer: the model stays released; the caller is failing anyway
  }
}

ShardedFrozenBase::Gathering ShardedFrozenBase::start_gather(int64_t layer) {
  Gathering g;
  g.layer = layer;
  std::vector<Tensor> shards;
  for (const Entry& e : layers_.at(static_cast<size_t>(layer))) {
    g.full.push_back(empty({e.shard.numel() * comm_.world_size()}, e.shard.options()));
    shards.push_back(e.shard);
  }
  auto all_gather = [shards, full = g.full](Communicator& c) mutable {
    for (size_t i = 0; i < shards.size(); ++i) c.all_gather(shards[i], full[i]);
  };
  if (prefetcher_) {
    g.work = prefetcher_->submit(std::move(all_gather));
  } else {
    all_gather(comm_);
  }
  return g;
}

void ShardedFrozenBase::install(Gathering& g) {
  if (g.work.valid()) g.work.wait();
  std::vector<Entry>& entries = layers_.at(static_cast<size_t>(g.layer));
  for (size_t i = 0; i < entries.size(); ++i)
    entries[i].param.set_data(g.full[i].narrow(0, 0, shape_numel(entries[i].shape)).view(entries[i].shape));
}

void ShardedFrozenBase::gather(int64_t layer) {
  const int64_t n = static_cast<int64_t>(layers_.size());
  if (prefetched_.layer == layer) {
    install(prefetched_);
    note(fmt::format("gather {} prefetched", layer));
  } else {
    if (prefetched_.work.valid()) prefetched_.work.wait();  // a missed prediction: completed, dropped
    Gathering now = start_gather(layer);
    install(now);
    note(fmt::format("gather {}", layer));
  }
  prefetched_ = Gathering();
  if (prefetcher_) {
    // Going up (forward) or down (checkpointing's recompute in backward, which starts by
    // gathering the forward's last layer again). Layer 0 reached from above other than from layer
    // 1 starts a forward; from layer 1 it ends a recompute, after which comes the next forward's
    // layer 0, not predicted.
    const bool forward_starts = layer == 0 && last_gathered_ != 1;
    const int step = forward_starts || layer > last_gathered_ ? 1 : -1;
    const int64_t next = layer + step;
    if (next >= 0 && next < n) {
      prefetched_ = start_gather(next);
      note(fmt::format("prefetch {}", next));
    }
  }
  last_gathered_ = layer;
}

void ShardedFrozenBase::release(int64_t layer) {
  for (Entry& e : layers_.at(static_cast<size_t>(layer))) e.param.set_data(placeholder(e.shape, e.shard));
  note(fmt::format("release {}", layer));
}

int64_t ShardedFrozenBase::shard_bytes() const {
  int64_t n = 0;
  for (const auto& layer : layers_)
    for (const Entry& e : layer) n += static_cast<int64_t>(e.shard.nbytes());
  return n;
}

int64_t ShardedFrozenBase::full_bytes() const {
  int64_t n = 0;
  for (const auto& layer : layers_)
    for (const Entry& e : layer) n += shape_numel(e.shape) * static_cast<int64_t>(e.shard.element_size());
  return n;
}

}  // namespace mlr::dist

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

bool is_decoder_parameter(const std::string& name) { return name.rfind("model.layers.", 0) == 0; }

}  // namespace

ShardRange shard_range(int64_t numel, int64_t rank, int64_t world) {
  MLR_CHECK(numel >= 0 && world > 0 && rank >= 0 && rank < world, "sharded base: rank {} of {} for {} elements", rank,
            world, numel);
  ShardRange r;
  r.chunk = (numel + world - 1) / world;
  r.begin = std::min(numel, rank * r.chunk);
  r.count = std::min(numel, r.begin + r.chunk) - r.begin;
  return r;
}

ShardedLoad load_with_sharded_base(const std::string& dir, int64_t rank, int64_t world, DType dtype, Device device) {
  ShardedLoad out;
  LlamaForCausalLM::PartialLoad partial;
  partial.selects = is_decoder_parameter;
  partial.load = [&](const std::string& name, const Variable& param,
                     const std::function<Tensor(int64_t, int64_t)>& read) {
    const int64_t numel = shape_numel(param.shape());
    const ShardRange r = shard_range(numel, rank, world);
    LoadedShard s{name, param, zeros({r.chunk}, {dtype, device})};
    // Converted while copied, as a whole load converts: the same values as slicing a whole weight.
    const Tensor stored = read(r.begin, r.count);
    if (r.count > 0) s.shard.narrow(0, 0, r.count).copy_(stored);
    out.bytes_read += static_cast<int64_t>(stored.nbytes());
    out.stored_bytes += numel * static_cast<int64_t>(stored.element_size());
    out.shards.push_back(std::move(s));
  };
  out.model = LlamaForCausalLM::from_pretrained(dir, dtype, device, partial);
  return out;
}

ShardedFrozenBase::ShardedFrozenBase(Communicator& comm, LlamaForCausalLM& model, const std::vector<Variable>& keep_whole,
                                     std::unique_ptr<CollectiveWorker> prefetcher, std::vector<LoadedShard> loaded)
    : comm_(comm), model_(model), prefetcher_(std::move(prefetcher)) {
  const int64_t n_layers = model.config().num_hidden_layers;
  layers_.resize(static_cast<size_t>(n_layers));
  whole_.assign(static_cast<size_t>(n_layers), false);
  const int64_t world = comm_.world_size();
  for (const auto& named : model.named_parameters()) {
    const std::string& name = named.first;
    const Variable& param = named.second;
    if (param.requires_grad() || !is_decoder_parameter(name)) continue;
    if (std::any_of(keep_whole.begin(), keep_whole.end(), [&](const Variable& v) { return v.is_same(param); })) continue;
    const size_t dot = name.find('.', 13);
    const int64_t layer = std::stoll(name.substr(13, dot - 13));
    MLR_CHECK(layer >= 0 && layer < n_layers, "sharded base: parameter {} names layer {} of {}", name, layer, n_layers);
    Entry e;
    e.param = param;
    e.shape = param.data().shape();
    auto from_files = std::find_if(loaded.begin(), loaded.end(), [&](const LoadedShard& s) { return s.param.is_same(param); });
    if (from_files != loaded.end()) {
      const ShardRange r = shard_range(shape_numel(e.shape), comm_.rank(), world);
      MLR_CHECK(from_files->shard.dim() == 1 && from_files->shard.size(0) == r.chunk,
                "sharded base: the loaded shard of {} has {} elements, expected {} (loaded for another world size?)",
                name, from_files->shard.numel(), r.chunk);
      e.shard = from_files->shard;
      loaded.erase(from_files);
    } else {
      const Tensor flat = param.data().contiguous().reshape({-1});
      const ShardRange r = shard_range(flat.numel(), comm_.rank(), world);
      e.shard = zeros({r.chunk}, flat.options());
      if (r.count > 0) e.shard.narrow(0, 0, r.count).copy_(flat.narrow(0, r.begin, r.count));
    }
    layers_[static_cast<size_t>(layer)].push_back(std::move(e));
  }
  // A weight loaded in part that is trained or kept whole has no values anywhere.
  MLR_CHECK(loaded.empty(), "sharded base: {} was loaded as this rank's shard only, but it is {} (load the model "
            "whole for that)", loaded.empty() ? "" : loaded.front().name,
            loaded.empty() || !loaded.front().param.requires_grad() ? "kept whole" : "trained");
  for (int64_t l = 0; l < n_layers; ++l) release(l);
  model_.model->before_layer = [this](int64_t l) { gather(l); };
  model_.model->after_layer = [this](int64_t l) { release(l); };
}

ShardedFrozenBase::~ShardedFrozenBase() {
  model_.model->before_layer = nullptr;
  model_.model->after_layer = nullptr;
  if (std::uncaught_exceptions() > 0) return;  // failing: no collective the other ranks may never join
  if (keep_released_) {
    if (prefetched_.work.valid()) prefetched_.work.wait();  // its buffers are written by the worker
    return;
  }
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
  if (!whole_.at(static_cast<size_t>(g.layer))) {
    whole_[static_cast<size_t>(g.layer)] = true;
    ++whole_layers_;
    lockstep_counts_.peak_whole_layers = std::max(lockstep_counts_.peak_whole_layers, whole_layers_);
  }
}

void ShardedFrozenBase::gather(int64_t layer) {
  if (lockstep_) enter_lockstep_layer(layer);
  gather_layer(layer);
}

void ShardedFrozenBase::release(int64_t layer) {
  release_layer(layer);
  if (lockstep_ && pass_open_ && layer + 1 == static_cast<int64_t>(layers_.size())) pass_open_ = false;
}

void ShardedFrozenBase::gather_layer(int64_t layer) {
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
    // layer 0, not predicted. In lockstep every pass is a forward.
    const bool forward_starts = layer == 0 && (lockstep_ || last_gathered_ != 1);
    const int step = forward_starts || layer > last_gathered_ ? 1 : -1;
    const int64_t next = layer + step;
    if (next >= 0 && next < n) {
      prefetched_ = start_gather(next);
      note(fmt::format("prefetch {}", next));
    }
  }
  last_gathered_ = layer;
}

void ShardedFrozenBase::release_layer(int64_t layer) {
  for (Entry& e : layers_.at(static_cast<size_t>(layer))) e.param.set_data(placeholder(e.shape, e.shard));
  if (whole_.at(static_cast<size_t>(layer))) {
    whole_[static_cast<size_t>(layer)] = false;
    --whole_layers_;
  }
  note(fmt::format("release {}", layer));
}

void ShardedFrozenBase::begin_lockstep() {
  MLR_CHECK(!lockstep_, "sharded base: begin_lockstep while already in lockstep");
  lockstep_ = true;
  pass_open_ = false;
  lockstep_counts_ = LockstepCounts();
  lockstep_counts_.peak_whole_layers = whole_layers_;
}

void ShardedFrozenBase::end_lockstep() {
  MLR_CHECK(!pass_open_, "sharded base: lockstep ended in the middle of a pass (at layer {} of {})", last_gathered_,
            layers_.size());
  lockstep_ = false;
}

int64_t ShardedFrozenBase::all_reduce_pass_flag(int64_t flag) {
  // On the model's device: the base's communicator is that device's (NCCL for CUDA tensors).
  Tensor t = full({1}, static_cast<double>(flag), {DType::f32, model_.model->embed_tokens->weight().device()});
  comm_.all_reduce(t, ReduceOp::sum);
  return static_cast<int64_t>(t.to(Device::cpu()).item<float>());
}

void ShardedFrozenBase::enter_lockstep_layer(int64_t layer) {
  const int64_t n = static_cast<int64_t>(layers_.size());
  if (layer == 0) {
    MLR_CHECK(!pass_open_,
              "sharded base (lockstep): layer 0 gathered while a pass is at layer {} of {}: a lockstep pass must run "
              "every layer once, in order (a forward cut short?)", last_gathered_, n);
    all_reduce_pass_flag(1);
    note("pass");
    pass_open_ = true;
    ++lockstep_counts_.passes;
    return;
  }
  MLR_CHECK(pass_open_ && layer == last_gathered_ + 1,
            "sharded base (lockstep): layer {} of {} gathered {}; a lockstep pass runs the layers 0 to {} in order (a "
            "no-grad forward: activation checkpointing's recompute during backward cannot run in lockstep)",
            layer, n, pass_open_ ? fmt::format("after layer {}", last_gathered_) : std::string("outside a pass"), n - 1);
}

void ShardedFrozenBase::join_remaining_passes() {
  MLR_CHECK(lockstep_, "sharded base: join_remaining_passes outside lockstep (begin_lockstep first)");
  MLR_CHECK(!pass_open_, "sharded base (lockstep): join_remaining_passes while this rank's pass is at layer {} of {}",
            last_gathered_, layers_.size());
  const int64_t n = static_cast<int64_t>(layers_.size());
  for (;;) {
    const int64_t passes = all_reduce_pass_flag(0);
    note(fmt::format("join {}", passes));
    if (passes == 0) return;
    // Another rank runs a pass this round: take part in its gathers (and prefetches), in order.
    note("idle pass");
    ++lockstep_counts_.idle_passes;
    for (int64_t l = 0; l < n; ++l) {
      gather_layer(l);
      release_layer(l);
    }
  }
}

void ShardedFrozenBase::for_each_layer_gathered(const std::vector<int64_t>& layers,
                                                const std::function<void(int64_t)>& visit) {
  MLR_CHECK(std::is_sorted(layers.begin(), layers.end()) &&
                std::adjacent_find(layers.begin(), layers.end()) == layers.end() &&
                (layers.empty() || (layers.front() >= 0 && layers.back() < static_cast<int64_t>(layers_.size()))),
            "sharded base: layers to visit must increase within [0, {}), got [{}]", layers_.size(),
            fmt::join(layers, ", "));
  for (int64_t l : layers) {
    gather(l);
    visit(l);  // an exception leaves layer l gathered: the run fails on every rank alike
    release(l);
  }
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

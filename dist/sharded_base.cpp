#include "dist/sharded_base.h"

#include <algorithm>
#include <exception>

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

ShardedFrozenBase::ShardedFrozenBase(Communicator& comm, LlamaForCausalLM& model, const std::vector<Variable>& keep_whole)
    : comm_(comm), model_(model) {
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
    for (size_t l = 0; l < layers_.size(); ++l) gather(static_cast<int64_t>(l));
  } catch (const std::exception&) {
    // a lost peer: the model stays released; the caller is failing anyway
  }
}

void ShardedFrozenBase::gather(int64_t layer) {
  for (Entry& e : layers_.at(static_cast<size_t>(layer))) {
    Tensor full = empty({e.shard.numel() * comm_.world_size()}, e.shard.options());
    comm_.all_gather(e.shard, full);
    e.param.set_data(full.narrow(0, 0, shape_numel(e.shape)).view(e.shape));
  }
}

void ShardedFrozenBase::release(int64_t layer) {
  for (Entry& e : layers_.at(static_cast<size_t>(layer))) e.param.set_data(placeholder(e.shape, e.shard));
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

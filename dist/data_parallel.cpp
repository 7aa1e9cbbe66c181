#include "dist/data_parallel.h"

#include <algorithm>
#include <exception>

#include "tensor/ops.h"

namespace mlr::dist {

GradientBuckets::GradientBuckets(Communicator& comm, std::vector<Variable> params, GradientBucketOptions options,
                                 std::unique_ptr<CollectiveWorker> worker)
    : comm_(comm), params_(std::move(params)), options_(std::move(options)), worker_(std::move(worker)) {
  MLR_CHECK(options_.owners.empty() || options_.owners.size() == params_.size(),
            "dist: gradient buckets: {} owners for {} parameters", options_.owners.size(), params_.size());
  MLR_CHECK(!worker_ || (worker_->communicator().world_size() == comm_.world_size() &&
                         worker_->communicator().rank() == comm_.rank()),
            "dist: gradient buckets: the worker's communicator is not this job's");
  // Reverse parameter order: the last layers' gradients are final first.
  Bucket current;
  size_t bytes = 0;
  for (size_t k = params_.size(); k-- > 0;) {
    const Tensor& p = params_[k].data();
    const Tensor* first = current.members.empty() ? nullptr : &params_[current.members.front()].data();
    const bool same_kind = first == nullptr || (first->dtype() == p.dtype() && first->device() == p.device());
    if (first != nullptr && (!same_kind || bytes + p.nbytes() > options_.bucket_bytes)) {
      buckets_.push_back(std::move(current));
      current = Bucket();
      bytes = 0;
    }
    current.members.push_back(k);
    bytes += p.nbytes();
  }
  if (!current.members.empty()) buckets_.push_back(std::move(current));
  bucket_of_.resize(params_.size());
  for (size_t b = 0; b < buckets_.size(); ++b) {
    layout(buckets_[b]);
    for (size_t i : buckets_[b].members) bucket_of_[i] = b;
  }
  ready_.assign(params_.size(), false);
  if (worker_)
    for (size_t i = 0; i < params_.size(); ++i) params_[i].set_grad_ready_hook([this, i] { gradient_ready(i); });
}

GradientBuckets::~GradientBuckets() {
  if (worker_)
    for (Variable& p : params_) p.set_grad_ready_hook(nullptr);
  // Unwinding an error: no wait for reductions the other ranks may never join (the worker drops
  // those not started).
  if (std::uncaught_exceptions() > 0) return;
  for (Bucket& b : buckets_) {
    try {
      if (b.work.valid()) b.work.wait();
    } catch (const std::exception&) {
      // failing already: the error was (or will be) reported by whoever waits in finish()
    }
  }
}

// Without sharding: [gradients of every member][their flags]. With: world chunks of `chunk`
// elements, chunk r = [gradients of the members rank r owns][their flags][padding].
void GradientBuckets::layout(Bucket& b) const {
  const int chunks = sharded() ? comm_.world_size() : 1;
  std::vector<std::vector<size_t>> by_chunk(static_cast<size_t>(chunks));
  for (size_t j = 0; j < b.members.size(); ++j)
    by_chunk[sharded() ? static_cast<size_t>(options_.owners[b.members[j]]) : 0].push_back(j);
  b.offset.assign(b.members.size(), 0);
  b.flag.assign(b.members.size(), 0);
  b.chunk = 0;
  for (const auto& js : by_chunk) {
    int64_t n = 0;
    for (size_t j : js) n += params_[b.members[j]].data().numel() + 1;
    b.chunk = std::max(b.chunk, n);
  }
  for (size_t r = 0; r < by_chunk.size(); ++r) {
    int64_t at = static_cast<int64_t>(r) * b.chunk;
    for (size_t j : by_chunk[r]) {
      b.offset[j] = at;
      at += params_[b.members[j]].data().numel();
    }
    for (size_t j : by_chunk[r]) b.flag[j] = at++;
  }
}

void GradientBuckets::arm() {
  if (!worker_) return;
  MLR_CHECK(!armed_ && next_start_ == 0, "dist: gradient buckets armed twice without finish()");
  std::fill(ready_.begin(), ready_.end(), false);
  for (Bucket& b : buckets_) b.pending = b.members.size();
  armed_ = true;
}

void GradientBuckets::gradient_ready(size_t param) {
  if (!armed_) return;  // an earlier micro-batch: gradients accumulate locally
  Bucket& b = buckets_[bucket_of_[param]];
  if (ready_[param]) {
    MLR_CHECK(!b.started,
              "dist: rank {}: parameter '{}' (shape {}) received a second gradient in one backward pass after its "
              "bucket's reduction had started (a parameter used by two checkpointed segments, or reached by two "
              "graphs): its reduced gradient would miss a part",
              comm_.rank(), params_[param].name(), shape_str(params_[param].shape()));
    return;
  }
  ready_[param] = true;
  note("ready " + std::to_string(param));
  if (--b.pending > 0) return;
  while (next_start_ < buckets_.size() && buckets_[next_start_].pending == 0) start(next_start_++);
}

void GradientBuckets::start(size_t index) {
  Bucket& b = buckets_[index];
  const Tensor& like = params_[b.members.front()].data();
  const int chunks = sharded() ? comm_.world_size() : 1;
  b.buffer = zeros({b.chunk * chunks}, like.options());
  for (size_t j = 0; j < b.members.size(); ++j) {
    Variable& p = params_[b.members[j]];
    if (!p.grad().defined()) continue;
    const int64_t n = p.data().numel();
    b.buffer.narrow(0, b.offset[j], n).copy_(p.grad().reshape({n}));
    b.buffer.narrow(0, b.flag[j], 1).fill_(1.0);
    if (sharded() && options_.owners[b.members[j]] != comm_.rank()) p.zero_grad(/*set_to_none=*/true);
  }
  b.received = sharded() ? empty({b.chunk}, like.options()) : b.buffer;
  b.started = true;
  note("start " + std::to_string(index));
  auto reduce = [buffer = b.buffer, received = b.received, sharded = sharded()](Communicator& c) mutable {
    if (sharded) {
      c.reduce_scatter(buffer, received, ReduceOp::sum);
    } else {
      c.all_reduce(buffer, ReduceOp::sum);
    }
  };
  if (worker_) {
    b.work = worker_->submit(std::move(reduce));
  } else {
    reduce(comm_);
  }
}

void GradientBuckets::finish() {
  while (next_start_ < buckets_.size()) start(next_start_++);
  for (size_t k = 0; k < buckets_.size(); ++k) {
    Bucket& b = buckets_[k];
    if (b.work.valid()) b.work.wait();
    note("reduced " + std::to_string(k));
    write_back(b);
  }
  next_start_ = 0;
  armed_ = false;
}

void GradientBuckets::write_back(Bucket& b) {
  const int64_t base = sharded() ? static_cast<int64_t>(comm_.rank()) * b.chunk : 0;
  // This rank's members (all of them without sharding); their flags sit together.
  std::vector<size_t> kept;
  for (size_t j = 0; j < b.members.size(); ++j) {
    if (sharded() && options_.owners[b.members[j]] != comm_.rank()) {
      params_[b.members[j]].zero_grad(/*set_to_none=*/true);
      continue;
    }
    kept.push_back(j);
  }
  if (!kept.empty()) {
    const int64_t first_flag = b.flag[kept.front()] - base;
    const std::vector<double> flags =
        b.received.narrow(0, first_flag, static_cast<int64_t>(kept.size())).to(DType::f64).to_vector<double>();
    for (size_t k = 0; k < kept.size(); ++k) {
      const size_t j = kept[k];
      Variable& p = params_[b.members[j]];
      if (flags[k] < 0.5) continue;  // no rank had a gradient: it stays undefined
      const int64_t n = p.data().numel();
      Tensor reduced = b.received.narrow(0, b.offset[j] - base, n).view(p.data().shape());
      if (p.grad().defined()) {
        Tensor g = p.grad();
        g.copy_(reduced);
      } else {
        p.set_grad(reduced.clone());
      }
    }
  }
  b.buffer = Tensor();
  b.received = Tensor();
  b.work = CollectiveWork();
  b.started = false;
}

void GradientBuckets::broadcast_parameters(int root) {
  for (Variable& p : params_) {
    Tensor value = p.data();
    if (value.is_contiguous()) {
      comm_.broadcast(value, root);
    } else {
      Tensor copy = value.contiguous();
      comm_.broadcast(copy, root);
      value.copy_(copy);
    }
  }
}

namespace {

// Through the communicator's device (a GPU for NCCL) and back.
template <typename T>
void sum_over_ranks(Communicator& comm, std::vector<T>& values) {
  if (values.empty()) return;
  Tensor t = from_vector(values, {static_cast<int64_t>(values.size())}).to(comm.device());
  comm.all_reduce(t, ReduceOp::sum);
  values = t.to(Device::cpu()).to_vector<T>();
}

}  // namespace

void all_reduce_sum(Communicator& comm, std::vector<double>& values) { sum_over_ranks(comm, values); }
void all_reduce_sum(Communicator& comm, std::vector<int64_t>& values) { sum_over_ranks(comm, values); }

}  // namespace mlr::dist

#include "dist/gloo_communicator.h"

#include <chrono>
#include <cstring>

#include <fmt/format.h>
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include "tensor/ops.h"

namespace mlr::dist {

namespace {

// Gloo's view of the rendezvous store, under a prefix (one Gloo context per prefix).
class GlooStore : public gloo::rendezvous::Store {
 public:
  GlooStore(StoreClient& client, std::string prefix, std::chrono::milliseconds timeout)
      : client_(client), prefix_(std::move(prefix)), timeout_(timeout) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    client_.set(prefix_ + key, std::string(data.begin(), data.end()));
  }
  std::vector<char> get(const std::string& key) override {
    const std::string v = client_.wait_get(prefix_ + key, timeout_, what(key));
    return std::vector<char>(v.begin(), v.end());
  }
  void wait(const std::vector<std::string>& keys) override { wait(keys, timeout_); }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override {
    for (const std::string& k : keys) client_.wait_get(prefix_ + k, timeout, what(k));
  }

 private:
  std::string what(const std::string& key) const {
    return fmt::format("Gloo's connection key '{}{}' never appeared in the rendezvous store (the rank that owns it "
                       "did not reach the connection step)",
                       prefix_, key);
  }
  StoreClient& client_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

template <typename Half>
void add_halves(void* out, const void* a, const void* b, size_t n) {
  auto* o = static_cast<Half*>(out);
  const auto* x = static_cast<const Half*>(a);
  const auto* y = static_cast<const Half*>(b);
  for (size_t i = 0; i < n; ++i) o[i] = Half(static_cast<float>(x[i]) + static_cast<float>(y[i]));
}

template <typename T>
void set_sum(gloo::AllreduceOptions& opts, void* data, size_t n) {
  opts.setOutput(static_cast<T*>(data), n);
  opts.setReduceFunction(static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
}

}  // namespace

std::shared_ptr<gloo::Context> connect_gloo_mesh(int rank, int world_size, StoreClient& store,
                                                 const std::string& key_prefix, const GlooTransport& transport,
                                                 std::chrono::milliseconds timeout) {
  gloo::transport::tcp::attr attr;
  if (!transport.iface.empty()) {
    attr.iface = transport.iface;
  } else {
    attr.hostname = transport.hostname;
  }
  auto device = gloo::transport::tcp::CreateDevice(attr);
  auto context = std::make_shared<gloo::rendezvous::Context>(rank, world_size);
  context->setTimeout(timeout);
  GlooStore gloo_store(store, key_prefix, timeout);
  context->connectFullMesh(gloo_store, device);
  return context;
}

void gloo_all_reduce_sum(const std::shared_ptr<gloo::Context>& context, void* data, size_t n, DType dtype,
                         std::chrono::milliseconds timeout) {
  if (n == 0) return;
  gloo::AllreduceOptions opts(context);
  opts.setTimeout(timeout);
  switch (dtype) {
    case DType::f32: set_sum<float>(opts, data, n); break;
    case DType::f64: set_sum<double>(opts, data, n); break;
    case DType::i32: set_sum<int32_t>(opts, data, n); break;
    case DType::i64: set_sum<int64_t>(opts, data, n); break;
    case DType::bf16:
      opts.setOutput(static_cast<uint16_t*>(data), n);
      opts.setReduceFunction(&add_halves<bf16>);
      break;
    case DType::f16:
      opts.setOutput(static_cast<uint16_t*>(data), n);
      opts.setReduceFunction(&add_halves<f16>);
      break;
    case DType::boolean:
      throw Error("bool tensors cannot be reduced");
  }
  gloo::allreduce(opts);
}

void gloo_all_gather(const std::shared_ptr<gloo::Context>& context, const void* input, void* output,
                     size_t input_bytes, std::chrono::milliseconds timeout) {
  if (input_bytes == 0) return;
  gloo::AllgatherOptions opts(context);
  opts.setTimeout(timeout);
  opts.setInput(static_cast<char*>(const_cast<void*>(input)), input_bytes);
  opts.setOutput(static_cast<char*>(output), input_bytes * static_cast<size_t>(context->size));
  gloo::allgather(opts);
}

void gloo_broadcast(const std::shared_ptr<gloo::Context>& context, void* data, size_t bytes, int root,
                    std::chrono::milliseconds timeout) {
  if (bytes == 0) return;
  gloo::BroadcastOptions opts(context);
  opts.setTimeout(timeout);
  opts.setRoot(root);
  opts.setOutput(static_cast<char*>(data), bytes);
  gloo::broadcast(opts);
}

GlooCommunicator::GlooCommunicator(int rank, int world_size, StoreClient& store, const std::string& key_prefix,
                                   const GlooTransport& transport, std::chrono::milliseconds timeout,
                                   CollectiveObserver observer)
    : Communicator(rank, world_size, timeout, std::move(observer)) {
  const auto t0 = std::chrono::steady_clock::now();
  try {
    context_ = connect_gloo_mesh(rank, world_size, store, key_prefix, transport, timeout);
  } catch (const CollectiveError&) {
    throw;
  } catch (const std::exception& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    throw failure("connect (Gloo full mesh)", 0, transport.iface.empty() ? "host " + transport.hostname
                                                                       : "interface " + transport.iface,
                  s, e.what());
  }
}

GlooCommunicator::~GlooCommunicator() = default;

template <typename Body>
void GlooCommunicator::run(const char* collective, const Tensor& t, Body&& body) {
  const int64_t seq = enter(collective, t, Device::cpu());
  const auto t0 = std::chrono::steady_clock::now();
  try {
    body();
  } catch (const std::exception& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    throw failure(collective, seq, describe(t), s, e.what());
  }
}

void GlooCommunicator::all_reduce(Tensor& t, ReduceOp op) {
  run("all_reduce", t, [&] { gloo_all_reduce_sum(context_, t.data_ptr(), static_cast<size_t>(t.numel()), t.dtype(), timeout_); });
  if (op == ReduceOp::avg && world_size_ > 1) {
    MLR_CHECK(t.is_floating_point(), "dist: rank {}: all_reduce avg of an integer tensor ({})", rank_,
              dtype_name(t.dtype()));
    mul_(t, 1.0 / world_size_);
  }
}

void GlooCommunicator::reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op) {
  check_same("reduce_scatter", output, input, world_size_, 1);
  Tensor reduced = input.clone();
  all_reduce(reduced, op);
  output.copy_(reduced.view({-1}).narrow(0, rank_ * output.numel(), output.numel()).view(output.shape()));
}

void GlooCommunicator::all_gather(const Tensor& input, Tensor& output) {
  check_same("all_gather", input, output, world_size_, 1);
  run("all_gather", input, [&] { gloo_all_gather(context_, input.data_ptr(), output.data_ptr(), input.nbytes(), timeout_); });
}

void GlooCommunicator::broadcast(Tensor& t, int root) {
  MLR_CHECK(root >= 0 && root < world_size_, "dist: rank {}: broadcast from rank {} of a world of {}", rank_, root,
            world_size_);
  run("broadcast", t, [&] { gloo_broadcast(context_, t.data_ptr(), t.nbytes(), root, timeout_); });
}

void GlooCommunicator::barrier() {
  const Tensor token = zeros({1});
  run("barrier", token, [&] {
    gloo::BarrierOptions opts(context_);
    opts.setTimeout(timeout_);
    gloo::barrier(opts);
  });
}

}  // namespace mlr::dist

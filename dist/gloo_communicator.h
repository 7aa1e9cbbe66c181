// The CPU communicator: Gloo (Debian's libgloo-dev) over TCP, one process per rank. Ranks connect
// in a full mesh, exchanging their addresses through the rendezvous store.
//
// Collectives: Gloo's ring all-reduce (sum, then a local division for avg), all-gather,
// broadcast and barrier; reduce-scatter is an all-reduce of a copy of the input followed by this
// rank's chunk (Gloo 0.0~2022 has no options-style reduce-scatter), twice the optimal traffic,
// which only the sharded-optimizer path would feel.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/store.h"

namespace gloo {
class Context;
}

namespace mlr::dist {

struct GlooTransport {
  std::string hostname;  // the address peers reach this rank at (127.0.0.1 when every rank is local)
  std::string iface;     // or a network interface (GLOO_SOCKET_IFNAME), which wins when set
};

// Gloo on raw host memory, for the communicator below and for the emulated NCCL of the emulated
// CUDA build (dist/emulated_nccl.cpp), whose device memory is host memory. They throw what Gloo
// throws (std::exception); the communicator turns that into a CollectiveError.
std::shared_ptr<gloo::Context> connect_gloo_mesh(int rank, int world_size, StoreClient& store,
                                                 const std::string& key_prefix, const GlooTransport& transport,
                                                 std::chrono::milliseconds timeout);
// data <- the sum over the ranks (bf16 and f16 add in f32, rounding once per hop).
void gloo_all_reduce_sum(const std::shared_ptr<gloo::Context>& context, void* data, size_t n, DType dtype,
                         std::chrono::milliseconds timeout);
// output (world x input_bytes) <- every rank's input in rank order.
void gloo_all_gather(const std::shared_ptr<gloo::Context>& context, const void* input, void* output,
                     size_t input_bytes, std::chrono::milliseconds timeout);
void gloo_broadcast(const std::shared_ptr<gloo::Context>& context, void* data, size_t bytes, int root,
                    std::chrono::milliseconds timeout);

class GlooCommunicator : public Communicator {
 public:
  // Collective over the ranks: every rank constructs one with the same store and prefix.
  GlooCommunicator(int rank, int world_size, StoreClient& store, const std::string& key_prefix,
                   const GlooTransport& transport, std::chrono::milliseconds timeout, CollectiveObserver observer);
  ~GlooCommunicator() override;
  std::string backend() const override { return "gloo"; }
  Device device() const override { return Device::cpu(); }

  void all_reduce(Tensor& t, ReduceOp op = ReduceOp::sum) override;
  void reduce_scatter(const Tensor& input, Tensor& output, ReduceOp op = ReduceOp::sum) override;
  void all_gather(const Tensor& input, Tensor& output) override;
  void broadcast(Tensor& t, int root) override;
  void barrier() override;

 private:
  template <typename Body>
  void run(const char* collective, const Tensor& t, Body&& body);
  std::shared_ptr<gloo::Context> context_;
};

}  // namespace mlr::dist

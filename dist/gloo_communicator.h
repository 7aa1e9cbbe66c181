// The CPU communicator: Gloo (Debian's libgloo-dev) over TCP, one process per rank. Ranks connect
// in a full mesh, exchanging their addresses through the rendezvous store.
//
// Collectives: Gloo's ring all-reduce (sum, then a local division for avg), all-gather,
// broadcast and barrier; reduce-scatter is an all-reduce of a copy of the input followed by this
// rank's chunk (Gloo 0.0~2022 has no options-style reduce-scatter), twice the optimal traffic,
// which only the sharded-optimizer path would feel.
#pragma once

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

class GlooCommunicator : public Communicator {
 public:
  // Collective over the ranks: every rank constructs one with the same store and prefix.
  GlooCommunicator(int rank, int world_size, StoreClient& store, const std::string& key_prefix,
                   const GlooTransport& transport, std::chrono::milliseconds timeout, CollectiveObserver observer);
  ~GlooCommunicator() override;
  std::string backend() const override { return "gloo"; }

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

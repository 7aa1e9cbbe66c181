// The CUDA communicator: NCCL, one GPU per rank. Rank 0 creates the unique id and passes it
// through the rendezvous store; communicator creation is non-blocking, so a rank that never joins
// is reported after the timeout instead of hanging in ncclCommInitRank.
//
// Each collective is queued on a communication stream that first waits for the device's compute
// stream (tensor/kernels/cuda/runtime.cu: the stream every kernel runs on), and the compute stream
// then waits for it: later kernels see the result, in stream order. The host polls the
// collective's completion event together with ncclCommGetAsyncError and aborts the communicator
// after the timeout, so a lost peer is an error naming the collective, never a hang. The poll
// makes each plain call synchronous for the host. start() (Communicator::queues_on_device) queues
// a job of collectives without that poll: the device runs them on the communication stream while
// the compute stream goes on (gradient buckets during backward, the sharded base's prefetch:
// dist/collective_worker.h), and the job's wait() does the poll and the stream ordering.
//
// Built with MLR_CUDA (in the emulated build against nccl.h, with dist/emulated_nccl.cpp standing in
// for the library: Gloo on the emulated devices' host memory); otherwise
// make_nccl_communicator throws saying so.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "dist/store.h"

namespace mlr::dist {

std::unique_ptr<Communicator> make_nccl_communicator(int rank, int world_size, int device, StoreClient& store,
                                                     const std::string& key_prefix, std::chrono::milliseconds timeout,
                                                     CollectiveObserver observer);
// Whether this build has the NCCL communicator.
bool nccl_available();

}  // namespace mlr::dist

// Joining a multi-process job: rendezvous, communicators, liveness.
//
// Rank 0 hosts the rendezvous store (dist/store.h) at MASTER_ADDR:MASTER_PORT; every rank connects,
// announces itself and waits for the others (a rank that never arrives is named after the
// timeout). Then the ranks connect Gloo's full mesh (the CPU communicator; the NCCL communicator
// for CUDA tensors is created on demand, its unique id passed through the same store).
//
// Liveness: a thread of every rank writes a heartbeat into the store every heartbeat_interval
// (a counter and the collective the rank is in) and watches the others'. A peer whose counter
// stands still for `timeout` (a dead, stopped or partitioned process), or a store that stops
// answering (rank 0 is gone), makes this rank print a message naming that rank and exit with
// status 1: a job never hangs on a lost rank. A collective that fails (a peer's socket closed, or
// Gloo's own timeout) throws an error that names the peers that stopped or are behind, read from
// the same heartbeats.
//
// Timeouts come from the environment: MLR_DIST_TIMEOUT (seconds, default 300) for collectives,
// the rendezvous and the watchdog; MLR_DIST_HEARTBEAT (seconds, default 0.5).
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>

#include "dist/communicator.h"
#include "dist/gloo_communicator.h"
#include "dist/launch.h"
#include "dist/store.h"

namespace mlr::dist {

struct ProcessGroupOptions {
  std::chrono::milliseconds timeout{300000};
  std::chrono::milliseconds heartbeat_interval{500};
};
ProcessGroupOptions process_group_options_from_env();

class ProcessGroup {
 public:
  ProcessGroup(const LaunchInfo& launch, const ProcessGroupOptions& options);
  // Marks this rank as exited. After finish(), rank 0 waits (10 s at most) for the others to do
  // the same before it closes the store, so no rank mistakes a clean end for a lost rank 0; after
  // an error it leaves at once (the others' watchdogs then name it).
  ~ProcessGroup();
  ProcessGroup(const ProcessGroup&) = delete;
  ProcessGroup& operator=(const ProcessGroup&) = delete;

  int rank() const { return launch_.rank; }
  int world_size() const { return launch_.world_size; }
  const LaunchInfo& launch() const { return launch_; }
  const ProcessGroupOptions& options() const { return options_; }
  Communicator& cpu() { return *cpu_; }
  // The communicator for tensors on `device`: Gloo for the CPU, NCCL for CUDA (created on first
  // use; throws when this build has no NCCL).
  Communicator& for_device(Device device);
  // Collective (every rank calls it, in the same order, with the same purpose): a further
  // communicator for tensors on `device` with connections of its own, for collectives that run
  // beside the main thread's (dist/collective_worker.h). Its calls do not move the heartbeat's
  // collective counter, which follows the main communicator's.
  std::unique_ptr<Communicator> new_communicator(Device device, const std::string& purpose);
  StoreClient& store() { return *store_; }
  // What the heartbeats say about the other ranks (who stopped, who is behind); one line.
  std::string describe_peers() { return describe_peers(*store_); }
  // A clean end: a barrier, so that no rank leaves while another still needs it.
  void finish();

 private:
  CollectiveObserver observer();
  // Reads the heartbeats through `store` (a side communicator's thread uses a client of its own).
  std::string describe_peers(StoreClient& store);
  void heartbeat_loop();
  [[noreturn]] void fatal(const std::string& message);

  LaunchInfo launch_;
  ProcessGroupOptions options_;
  std::unique_ptr<StoreServer> server_;
  std::unique_ptr<StoreClient> store_;
  std::unique_ptr<StoreClient> heartbeat_store_;
  GlooTransport transport_;
  int64_t side_communicators_ = 0;  // new_communicator's count, part of each one's store keys
  std::unique_ptr<Communicator> cpu_;
  std::unique_ptr<Communicator> nccl_;
  std::atomic<int64_t> sequence_{0};
  std::atomic<const char*> collective_{"start"};
  std::atomic<bool> stop_{false};
  bool finished_ = false;
  std::thread heartbeat_;
};

// The process group of this job when the environment names a launch (torchrun, srun, mpirun or
// scripts/launch_cpu_ranks.sh); null for a plain single process.
std::unique_ptr<ProcessGroup> join_from_env();

}  // namespace mlr::dist

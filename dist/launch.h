// Where this process sits in a multi-process job, read from the environment the launcher set:
//
//   torchrun   RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT
//   Slurm      SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE / SLURM_STEP_TASKS_PER_NODE,
//              SLURM_LAUNCH_NODE_IPADDR (srun's node, the rendezvous host unless MASTER_ADDR is set)
//   Open MPI   OMPI_COMM_WORLD_RANK, OMPI_COMM_WORLD_SIZE, OMPI_COMM_WORLD_LOCAL_RANK, OMPI_COMM_WORLD_LOCAL_SIZE
//
// torchrun's variables win when several sets are present (torchrun inside an allocation sets them
// on top of Slurm's). MASTER_ADDR and MASTER_PORT always override; without them the rendezvous
// host is 127.0.0.1 when every rank is on this node (or srun's launch node), and the port 29500
// (torchrun's default). Under torchrun (TORCHELASTIC_USE_AGENT_STORE=True) its agent already
// listens on MASTER_PORT with PyTorch's own store, so rank 0 hosts ours on MASTER_PORT + 1.
// MLR_STORE_PORT, when set, is the store's port whatever the launcher. No variable at all: a
// single process (world size 1).
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace mlr::dist {

struct LaunchInfo {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // of the rendezvous store (dist/store.h) hosted by rank 0
  std::string launcher = "none";  // torchrun | slurm | openmpi | none: which variables were read
};

// `getenv` stands in for std::getenv (tests pass a map). Throws mlr::Error naming the variable
// for a malformed or inconsistent value (RANK=3 with WORLD_SIZE=2, a port out of range, ...).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
LaunchInfo launch_info_from_env(const EnvLookup& getenv);
LaunchInfo launch_info_from_env();

}  // namespace mlr::dist

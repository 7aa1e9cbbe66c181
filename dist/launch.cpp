#include "dist/launch.h"

#include <cstdlib>

#include <fmt/format.h>

#include "base/error.h"

namespace mlr::dist {

namespace {

int parse_int(const EnvLookup& getenv, const std::string& name, int min_value) {
  const std::string text = *getenv(name);
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  MLR_CHECK(used == text.size() && !text.empty() && value >= min_value && value <= 1 << 24,
            "dist: environment variable {}={} is not an integer >= {}", name, text, min_value);
  return static_cast<int>(value);
}

std::optional<int> optional_int(const EnvLookup& getenv, const std::string& name, int min_value) {
  if (!getenv(name)) return std::nullopt;
  return parse_int(getenv, name, min_value);
}

// SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE look like "4(x2),3": the first node's count is
// enough for LOCAL_WORLD_SIZE on homogeneous allocations; mixed ones give each node's own count via
// SLURM_NTASKS_PER_NODE when set.
std::optional<int> slurm_local_size(const EnvLookup& getenv) {
  for (const char* name : {"SLURM_NTASKS_PER_NODE", "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
    const auto v = getenv(name);
    if (!v || v->empty()) continue;
    const size_t end = v->find_first_not_of("0123456789");
    const std::string digits = v->substr(0, end);
    if (!digits.empty()) return std::stoi(digits);
  }
  return std::nullopt;
}

}  // namespace

LaunchInfo launch_info_from_env(const EnvLookup& getenv) {
  LaunchInfo info;
  if (getenv("RANK") || getenv("WORLD_SIZE")) {
    MLR_CHECK(getenv("RANK") && getenv("WORLD_SIZE"), "dist: {} is set but {} is not (torchrun sets both)",
              getenv("RANK") ? "RANK" : "WORLD_SIZE", getenv("RANK") ? "WORLD_SIZE" : "RANK");
    info.launcher = "torchrun";
    info.rank = parse_int(getenv, "RANK", 0);
    info.world_size = parse_int(getenv, "WORLD_SIZE", 1);
    info.local_rank = optional_int(getenv, "LOCAL_RANK", 0).value_or(info.rank);
    info.local_world_size = optional_int(getenv, "LOCAL_WORLD_SIZE", 1).value_or(info.world_size);
  } else if (getenv("OMPI_COMM_WORLD_RANK")) {
    info.launcher = "openmpi";
    info.rank = parse_int(getenv, "OMPI_COMM_WORLD_RANK", 0);
    info.world_size = parse_int(getenv, "OMPI_COMM_WORLD_SIZE", 1);
    info.local_rank = optional_int(getenv, "OMPI_COMM_WORLD_LOCAL_RANK", 0).value_or(info.rank);
    info.local_world_size = optional_int(getenv, "OMPI_COMM_WORLD_LOCAL_SIZE", 1).value_or(info.world_size);
  } else if (getenv("SLURM_PROCID") && getenv("SLURM_NTASKS")) {
    info.launcher = "slurm";
    info.rank = parse_int(getenv, "SLURM_PROCID", 0);
    info.world_size = parse_int(getenv, "SLURM_NTASKS", 1);
    info.local_rank = optional_int(getenv, "SLURM_LOCALID", 0).value_or(0);
    info.local_world_size = slurm_local_size(getenv).value_or(info.world_size);
    if (const auto host = getenv("SLURM_LAUNCH_NODE_IPADDR")) info.master_addr = *host;
  } else {
    return info;  // one process
  }
  const std::string rank_var = info.launcher == "torchrun" ? "RANK"
                               : info.launcher == "slurm"  ? "SLURM_PROCID"
                                                           : "OMPI_COMM_WORLD_RANK";
  MLR_CHECK(info.rank < info.world_size, "dist: {} is {} but the world size is {} ({} launch)", rank_var, info.rank,
            info.world_size, info.launcher);
  MLR_CHECK(info.local_rank < info.local_world_size && info.local_world_size <= info.world_size,
            "dist: local rank {} of {} on this node does not fit the world size {} ({} launch)", info.local_rank,
            info.local_world_size, info.world_size, info.launcher);
  if (const auto addr = getenv("MASTER_ADDR")) {
    MLR_CHECK(!addr->empty(), "dist: MASTER_ADDR is set but empty");
    info.master_addr = *addr;
  } else {
    MLR_CHECK(info.local_world_size == info.world_size || info.launcher == "slurm",
              "dist: {} ranks span several nodes ({} on this one): set MASTER_ADDR (and MASTER_PORT) to the address "
              "of rank 0's node",
              info.world_size, info.local_world_size);
  }
  if (getenv("MASTER_PORT")) {
    info.master_port = parse_int(getenv, "MASTER_PORT", 1);
    MLR_CHECK(info.master_port <= 65535, "dist: MASTER_PORT={} is not a TCP port", info.master_port);
  }
  // torchrun's elastic agent hosts a store of its own (PyTorch's TCPStore) at MASTER_ADDR:MASTER_PORT
  // and tells its workers so; ours then listens on the next port of the same host.
  if (info.launcher == "torchrun" && getenv("TORCHELASTIC_USE_AGENT_STORE").value_or("") == "True") {
    MLR_CHECK(info.master_port < 65535,
              "dist: torchrun's agent holds MASTER_PORT={} and the rendezvous store needs the next port; set "
              "MLR_STORE_PORT to a free port",
              info.master_port);
    info.master_port += 1;
  }
  if (getenv("MLR_STORE_PORT")) {
    info.master_port = parse_int(getenv, "MLR_STORE_PORT", 1);
    MLR_CHECK(info.master_port <= 65535, "dist: MLR_STORE_PORT={} is not a TCP port", info.master_port);
  }
  return info;
}

LaunchInfo launch_info_from_env() {
  return launch_info_from_env([](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  });
}

}  // namespace mlr::dist

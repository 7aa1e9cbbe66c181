#include "dist/process_group.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "dist/gloo_communicator.h"
#include "dist/nccl_communicator.h"

namespace mlr::dist {

namespace {

std::chrono::milliseconds seconds_from_env(const char* name, double default_seconds) {
  const char* v = std::getenv(name);
  double s = default_seconds;
  if (v != nullptr) {
    char* end = nullptr;
    s = std::strtod(v, &end);
    MLR_CHECK(end != v && *end == '\0' && s > 0, "dist: {}={} is not a positive number of seconds", name, v);
  }
  return std::chrono::milliseconds(static_cast<int64_t>(s * 1000.0));
}

std::string heartbeat_key(int rank) { return "hb/" + std::to_string(rank); }

// A heartbeat value: "<beat> <sequence> <collective>", or "exited".
struct Beat {
  bool exited = false;
  int64_t beat = -1, sequence = 0;
  std::string collective;
};

std::optional<Beat> parse_beat(const std::optional<std::string>& v) {
  if (!v) return std::nullopt;
  Beat b;
  if (*v == "exited") {
    b.exited = true;
    return b;
  }
  std::istringstream in(*v);
  in >> b.beat >> b.sequence >> b.collective;
  return b;
}

double seconds(std::chrono::milliseconds ms) { return std::chrono::duration<double>(ms).count(); }

}  // namespace

ProcessGroupOptions process_group_options_from_env() {
  ProcessGroupOptions o;
  o.timeout = seconds_from_env("MLR_DIST_TIMEOUT", 300.0);
  o.heartbeat_interval = seconds_from_env("MLR_DIST_HEARTBEAT", 0.5);
  MLR_CHECK(o.heartbeat_interval * 4 <= o.timeout,
            "dist: MLR_DIST_HEARTBEAT ({} s) must be at most a quarter of MLR_DIST_TIMEOUT ({} s)",
            seconds(o.heartbeat_interval), seconds(o.timeout));
  return o;
}

ProcessGroup::ProcessGroup(const LaunchInfo& launch, const ProcessGroupOptions& options)
    : launch_(launch), options_(options) {
  const std::string who = fmt::format("rank {} of {}", rank(), world_size());
  if (rank() == 0) server_ = std::make_unique<StoreServer>(launch_.master_port);
  store_ = std::make_unique<StoreClient>(launch_.master_addr, launch_.master_port, options_.timeout, who);
  // Rendezvous: announce, then wait for every rank (rank 0 names the missing ones).
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  store_->set("rdzv/" + std::to_string(rank()), fmt::format("{} pid {}", host, ::getpid()));
  if (rank() == 0) {
    const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
    while (true) {
      std::vector<int> missing;
      for (int r = 1; r < world_size(); ++r)
        if (!store_->try_get("rdzv/" + std::to_string(r))) missing.push_back(r);
      if (missing.empty()) break;
      MLR_CHECK(std::chrono::steady_clock::now() < deadline,
                "dist: rank 0: rendezvous at port {} timed out after {:.0f} s: rank{} {} of {} never arrived (not "
                "started, crashed before joining, or given another MASTER_ADDR / MASTER_PORT)",
                launch_.master_port, seconds(options_.timeout), missing.size() > 1 ? "s" : "", fmt::join(missing, ", "),
                world_size());
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    store_->set("rdzv/complete", "1");
  } else {
    store_->wait_get("rdzv/complete", options_.timeout,
                     "rank 0 did not see every rank arrive at the rendezvous (another rank never started?)");
  }
  heartbeat_store_ = std::make_unique<StoreClient>(launch_.master_addr, launch_.master_port, options_.timeout, who);
  heartbeat_store_->set(heartbeat_key(rank()), "0 0 start");
  heartbeat_ = std::thread([this] { heartbeat_loop(); });
  try {
    GlooTransport transport;
    if (const char* iface = std::getenv("GLOO_SOCKET_IFNAME")) transport.iface = iface;
    transport.hostname = launch_.local_world_size == launch_.world_size ? "127.0.0.1" : std::string(host);
    transport_ = transport;
    cpu_ = std::make_unique<GlooCommunicator>(rank(), world_size(), *store_, "gloo/", transport, options_.timeout,
                                              observer());
  } catch (...) {
    // A peer lost while Gloo connects its mesh: no destructor runs for a constructor that throws, and
    // a running std::thread member would end the process in std::terminate instead of this error.
    stop_.store(true);
    heartbeat_.join();
    throw;
  }
}

std::unique_ptr<Communicator> ProcessGroup::new_communicator(Device device, const std::string& purpose) {
  CollectiveObserver side;
  side.on_enter = [](int64_t, const char*) {};
  // Its errors are raised on another thread than the main store client's: a client of its own.
  auto side_store = std::make_shared<StoreClient>(launch_.master_addr, launch_.master_port, options_.timeout,
                                                  fmt::format("rank {} of {} ({})", rank(), world_size(), purpose));
  side.describe_peers = [this, side_store] { return describe_peers(*side_store); };
  // Keys of their own in the store for each one created (a job may create several for one purpose).
  const std::string prefix = fmt::format("{}-{}-{}/", device.is_cpu() ? "gloo" : "nccl", purpose, side_communicators_++);
  if (device.is_cpu())
    return std::make_unique<GlooCommunicator>(rank(), world_size(), *store_, prefix, transport_, options_.timeout, side);
  return make_nccl_communicator(rank(), world_size(), device.index, *store_, prefix, options_.timeout, side);
}

ProcessGroup::~ProcessGroup() {
  stop_.store(true);
  if (heartbeat_.joinable()) heartbeat_.join();
  nccl_.reset();
  cpu_.reset();
  try {
    store_->set(heartbeat_key(rank()), "exited");
    if (rank() == 0 && finished_) {  // after a clean end, keep the store up until every rank has left it
      const auto deadline = std::chrono::steady_clock::now() + std::min(options_.timeout, std::chrono::milliseconds(10000));
      for (int r = 1; r < world_size(); ++r) {
        while (std::chrono::steady_clock::now() < deadline) {
          const auto b = parse_beat(store_->try_get(heartbeat_key(r)));
          if (b && b->exited) break;
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
    }
  } catch (const std::exception&) {
    // rank 0's store is gone: nothing left to tell it
  }
  heartbeat_store_.reset();
  store_.reset();
  server_.reset();
}

CollectiveObserver ProcessGroup::observer() {
  CollectiveObserver o;
  o.on_enter = [this](int64_t seq, const char* name) {
    collective_.store(name);
    sequence_.store(seq);
  };
  o.describe_peers = [this] { return describe_peers(); };
  return o;
}

Communicator& ProcessGroup::for_device(Device device) {
  if (device.is_cpu()) return *cpu_;
  if (!nccl_) nccl_ = make_nccl_communicator(rank(), world_size(), device.index, *store_, "nccl/", options_.timeout,
                                             observer());
  return *nccl_;
}

void ProcessGroup::finish() {
  cpu_->barrier();
  finished_ = true;
}

void ProcessGroup::fatal(const std::string& message) {
  std::fprintf(stderr, "mlr: dist: rank %d of %d: %s; exiting\n", rank(), world_size(), message.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

std::string ProcessGroup::describe_peers(StoreClient& store) {
  std::map<int, std::optional<Beat>> first, second;
  try {
    for (int r = 0; r < world_size(); ++r)
      if (r != rank()) first[r] = parse_beat(store.try_get(heartbeat_key(r)));
    std::this_thread::sleep_for(options_.heartbeat_interval * 2 + std::chrono::milliseconds(100));
    for (int r = 0; r < world_size(); ++r)
      if (r != rank()) second[r] = parse_beat(store.try_get(heartbeat_key(r)));
  } catch (const std::exception&) {
    return fmt::format("rank 0 (host of the rendezvous store at {}:{}) is unreachable: its process died or its node "
                       "is down",
                       launch_.master_addr, launch_.master_port);
  }
  std::vector<std::string> notes;
  const int64_t mine = sequence_.load();
  for (const auto& [r, b] : second) {
    const auto& a = first[r];
    if (!b) {
      notes.push_back(fmt::format("rank {} never joined", r));
    } else if (b->exited) {
      notes.push_back(fmt::format("rank {} has exited (its own log says why)", r));
    } else if (a && a->beat == b->beat) {
      notes.push_back(fmt::format("rank {} sent no heartbeat for {:.1f} s (its process died or is stopped)", r,
                                  seconds(options_.heartbeat_interval * 2)));
    } else if (b->sequence < mine) {
      notes.push_back(fmt::format("rank {} is alive but still at collective #{} ({}) while rank {} is at #{}: it is "
                                  "hung or slower than the timeout",
                                  r, b->sequence, b->collective, rank(), mine));
    }
  }
  if (notes.empty()) return "every peer is alive and at the same collective";
  return fmt::format("{}", fmt::join(notes, "; "));
}

// Every interval: write this rank's beat, read the others'. A peer whose beat has not moved for
// the timeout, or a store that fails (rank 0 gone), ends this process.
void ProcessGroup::heartbeat_loop() {
  int64_t beat = 0;
  std::map<int, std::pair<int64_t, std::chrono::steady_clock::time_point>> last_seen;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < world_size(); ++r) last_seen[r] = {-1, start};
  while (!stop_.load()) {
    const auto now = std::chrono::steady_clock::now();
    try {
      heartbeat_store_->set(heartbeat_key(rank()),
                            fmt::format("{} {} {}", ++beat, sequence_.load(), collective_.load()));
      for (int r = 0; r < world_size(); ++r) {
        if (r == rank()) continue;
        const auto b = parse_beat(heartbeat_store_->try_get(heartbeat_key(r)));
        auto& [seen, when] = last_seen[r];
        if (b && (b->exited || b->beat != seen)) {
          seen = b ? b->beat : -1;
          when = now;
          if (b->exited) seen = -2;
        } else if (seen != -2 && now - when > options_.timeout) {
          fatal(fmt::format("rank {} sent no heartbeat for {:.0f} s (MLR_DIST_TIMEOUT): its process died, hangs "
                            "outside this library, or is stopped",
                            r, std::chrono::duration<double>(now - when).count()));
        }
      }
    } catch (const std::exception&) {
      if (stop_.load()) return;
      fatal(fmt::format("rank 0 (host of the rendezvous store at {}:{}) stopped answering: its process died or its "
                        "node is down",
                        launch_.master_addr, launch_.master_port));
    }
    const auto wake = now + options_.heartbeat_interval;
    while (!stop_.load() && std::chrono::steady_clock::now() < wake)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::unique_ptr<ProcessGroup> join_from_env() {
  const LaunchInfo launch = launch_info_from_env();
  if (launch.launcher == "none") return nullptr;
  return std::make_unique<ProcessGroup>(launch, process_group_options_from_env());
}

}  // namespace mlr::dist

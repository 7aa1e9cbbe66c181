// dist/: launch environments, the rendezvous store, and the Gloo collectives between real
// processes: every multi-rank case forks one process per rank (no threads exist in this process
// before the fork), each joins a process group over 127.0.0.1 and reports through its exit status
// and a message file.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include <doctest/doctest.h>

#include "dist/data_parallel.h"
#include "dist/launch.h"
#include "dist/process_group.h"
#include "dist/store.h"
#include "tests/dist/run_ranks.h"
#include "tensor/ops.h"

using namespace mlr;
using namespace mlr::dist;

using mlr::test::check_all_ok;
using mlr::test::free_port;
using mlr::test::RankResult;
using mlr::test::run_ranks;

namespace {

using Env = std::map<std::string, std::string>;
LaunchInfo from(const Env& env) {
  return launch_info_from_env([&](const std::string& k) -> std::optional<std::string> {
    auto it = env.find(k);
    if (it == env.end()) return std::nullopt;
    return it->second;
  });
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// Values of rank r: r + 1 + i/8 (exact in every float dtype).
Tensor rank_values(int r, int64_t n, DType dtype) {
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = r + 1 + static_cast<double>(i % 8) / 8.0;
  return from_vector(v, {n}, dtype);
}

}  // namespace

TEST_CASE("launch: torchrun, Slurm and Open MPI environments") {
  LaunchInfo none = from({});
  CHECK(none.launcher == "none");
  CHECK(none.world_size == 1);
  LaunchInfo t = from({{"RANK", "3"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
                       {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "1234"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}});
  CHECK(t.launcher == "torchrun");  // torchrun's variables win inside a Slurm allocation
  CHECK((t.rank == 3 && t.world_size == 8 && t.local_rank == 1 && t.local_world_size == 2));
  CHECK((t.master_addr == "10.0.0.1" && t.master_port == 1234));
  LaunchInfo s = from({{"SLURM_PROCID", "5"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"},
                       {"SLURM_STEP_TASKS_PER_NODE", "4(x2)"}, {"SLURM_LAUNCH_NODE_IPADDR", "10.1.2.3"}});
  CHECK(s.launcher == "slurm");
  CHECK((s.rank == 5 && s.world_size == 8 && s.local_rank == 1 && s.local_world_size == 4));
  CHECK((s.master_addr == "10.1.2.3" && s.master_port == 29500));
  LaunchInfo m = from({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"}, {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                       {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}});
  CHECK(m.launcher == "openmpi");
  CHECK((m.rank == 1 && m.world_size == 4 && m.master_addr == "127.0.0.1"));
  // torchrun's agent listens on MASTER_PORT itself (as its `env` shows its workers): ours takes the next port.
  LaunchInfo agent = from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "localhost"}, {"MASTER_PORT", "38087"},
                           {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"TORCHELASTIC_RUN_ID", "x"}});
  CHECK((agent.launcher == "torchrun" && agent.master_addr == "localhost" && agent.master_port == 38088));
  LaunchInfo chosen = from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "38087"},
                            {"TORCHELASTIC_USE_AGENT_STORE", "True"}, {"MLR_STORE_PORT", "40000"}});
  CHECK(chosen.master_port == 40000);
  CHECK(from({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"MLR_STORE_PORT", "40001"}}).master_port ==
        40001);
}

TEST_CASE("launch: malformed or inconsistent variables are errors naming them") {
  CHECK(error_of([] { from({{"RANK", "2"}, {"WORLD_SIZE", "2"}}); }).find("RANK is 2 but the world size is 2") !=
        std::string::npos);
  CHECK(error_of([] { from({{"RANK", "x"}, {"WORLD_SIZE", "2"}}); }).find("RANK=x is not an integer") !=
        std::string::npos);
  CHECK(error_of([] { from({{"RANK", "0"}}); }).find("RANK is set but WORLD_SIZE is not") != std::string::npos);
  CHECK(error_of([] { from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}); })
            .find("MASTER_PORT=70000 is not a TCP port") != std::string::npos);
  CHECK(error_of([] { from({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "2"}}); })
            .find("set MASTER_ADDR") != std::string::npos);
  CHECK(error_of([] { from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MLR_STORE_PORT", "65536"}}); })
            .find("MLR_STORE_PORT=65536 is not a TCP port") != std::string::npos);
  CHECK(error_of([] {
          from({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "65535"}, {"TORCHELASTIC_USE_AGENT_STORE", "True"}});
        }).find("set MLR_STORE_PORT") != std::string::npos);
}

TEST_CASE("store: set, get, add, and a timed-out wait names what is missing") {
  StoreServer server(0);
  StoreClient a("127.0.0.1", server.port(), std::chrono::milliseconds(2000), "rank 0");
  StoreClient b("127.0.0.1", server.port(), std::chrono::milliseconds(2000), "rank 1");
  a.set("k", std::string("v\0w", 3));
  CHECK(b.try_get("k") == std::string("v\0w", 3));
  CHECK(!b.try_get("absent").has_value());
  CHECK(a.add("n", 2) == 2);
  CHECK(b.add("n", 5) == 7);
  const std::string e = error_of([&] { b.wait_get("never", std::chrono::milliseconds(100), "rank 7 never came"); });
  CHECK(e.find("rank 1: timed out after 0 s: rank 7 never came") != std::string::npos);
  const std::string refused =
      error_of([] { StoreClient c("127.0.0.1", free_port(), std::chrono::milliseconds(200), "rank 2"); });
  CHECK(refused.find("rank 2: no rendezvous store at 127.0.0.1:") != std::string::npos);
}

TEST_CASE("gloo: all-reduce sum and avg in f32, f64, bf16, f16, i64 over 2 and 4 processes") {
  for (int world : {2, 4}) {
    CAPTURE(world);
    check_all_ok(run_ranks(world, [world](ProcessGroup& g, std::ostream& msg) {
      const int64_t n = 1000;  // several ring segments per rank
      double rank_sum = 0;  // sum over ranks of (r + 1)
      for (int r = 0; r < world; ++r) rank_sum += r + 1;
      for (DType dtype : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i64}) {
        Tensor t = rank_values(g.rank(), n, dtype == DType::i64 ? DType::f64 : dtype);
        if (dtype == DType::i64) t = t.to(DType::i64);
        g.cpu().all_reduce(t, dist::ReduceOp::sum);
        const std::vector<double> got = t.to_vector<double>();
        for (int64_t i = 0; i < n; ++i) {
          const double frac = dtype == DType::i64 ? 0.0 : static_cast<double>(i % 8) / 8.0;
          const double want = rank_sum + world * frac;
          if (got[i] != want) {
            msg << dtype_name(dtype) << " sum [" << i << "] = " << got[i] << ", expected " << want;
            return 1;
          }
        }
      }
      Tensor avg = rank_values(g.rank(), 10, DType::f32);
      g.cpu().all_reduce(avg, dist::ReduceOp::avg);
      const double want = rank_sum / world + 0.125;
      if (std::abs(avg.to_vector<double>()[1] - want) > 1e-6) {
        msg << "avg " << avg.to_vector<double>()[1] << ", expected " << want;
        return 1;
      }
      return 0;
    }));
  }
}

TEST_CASE("gloo: reduce-scatter, all-gather, broadcast and barrier over 3 processes") {
  check_all_ok(run_ranks(3, [](ProcessGroup& g, std::ostream& msg) {
    const int world = g.world_size(), r = g.rank();
    // reduce-scatter: input [world * 4] = rank + position; out = sum over ranks of chunk r.
    std::vector<float> in(world * 4);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(r * 100 + i);
    Tensor input = from_vector(in, {world * 4});
    Tensor out = zeros({4});
    g.cpu().reduce_scatter(input, out, dist::ReduceOp::sum);
    for (int i = 0; i < 4; ++i) {
      const float want = 300 + 3.0f * (r * 4 + i);  // (0 + 100 + 200) + 3 * position
      if (out.to_vector<float>()[i] != want) {
        msg << "reduce_scatter[" << i << "] = " << out.to_vector<float>()[i] << ", expected " << want;
        return 1;
      }
    }
    // all-gather of bf16 [2] per rank.
    Tensor mine = from_vector(std::vector<float>{static_cast<float>(r), static_cast<float>(r) + 0.5f}, {2}, DType::bf16);
    Tensor all = zeros({world * 2}, DType::bf16);
    g.cpu().all_gather(mine, all);
    const std::vector<float> gathered = all.to_vector<float>();
    for (int k = 0; k < world; ++k) {
      if (gathered[2 * k] != k || gathered[2 * k + 1] != k + 0.5f) {
        msg << "all_gather: rank " << k << "'s values are " << gathered[2 * k] << ", " << gathered[2 * k + 1];
        return 1;
      }
    }
    // broadcast from rank 2.
    Tensor b = full({5}, r * 10.0);
    g.cpu().broadcast(b, 2);
    if (b.to_vector<double>() != std::vector<double>(5, 20.0)) {
      msg << "broadcast gave " << b.to_vector<double>()[0];
      return 1;
    }
    g.cpu().barrier();
    // Wrong sizes are errors naming the collective and the sizes.
    const std::string e = error_of([&] {
      Tensor wrong = zeros({5}, DType::bf16);
      g.cpu().all_gather(mine, wrong);
    });
    if (e.find("all_gather: input has 2 elements and output 5; with 3 ranks the output must have 6") ==
        std::string::npos) {
      msg << "unexpected error: " << e;
      return 1;
    }
    g.finish();
    return 0;
  }));
}

TEST_CASE("data parallel: gradient buckets sum every gradient, undefined ones counted as zeros") {
  check_all_ok(run_ranks(2, [](ProcessGroup& g, std::ostream& msg) {
    const int r = g.rank();
    std::vector<Variable> params;
    for (int i = 0; i < 5; ++i) params.push_back(Variable::leaf(full({3, 2}, i + 10.0 * r)));
    params.push_back(Variable::leaf(full({4}, 1.0, DType::f64)));  // another dtype: its own bucket
    for (int i = 0; i < 5; ++i)
      if (!(i == 1 && r == 0) && i != 3) params[i].set_grad(full({3, 2}, (r + 1) * (i + 1.0)));
    params[5].set_grad(full({4}, r + 0.5, DType::f64));
    GradientBuckets buckets(g.cpu(), params, {/*bucket_bytes=*/48});  // two f32 parameters per bucket
    if (buckets.bucket_count() != 4) {
      msg << buckets.bucket_count() << " buckets";
      return 1;
    }
    buckets.broadcast_parameters(0);
    buckets.all_reduce();
    for (int i = 0; i < 5; ++i) {
      if (params[i].data().to_vector<double>()[0] != i) {
        msg << "parameter " << i << " was not broadcast from rank 0";
        return 1;
      }
      if (i == 3) {
        if (params[i].grad().defined()) {
          msg << "parameter 3 has no gradient anywhere and got one";
          return 1;
        }
        continue;
      }
      const double want = i == 1 ? 2 * (i + 1.0) : 3 * (i + 1.0);  // rank 0 had none for parameter 1
      if (params[i].grad().to_vector<double>() != std::vector<double>(6, want)) {
        msg << "gradient " << i << " = " << params[i].grad().to_vector<double>()[0] << ", expected " << want;
        return 1;
      }
    }
    if (params[5].grad().to_vector<double>() != std::vector<double>(4, 2.0)) {
      msg << "f64 gradient " << params[5].grad().to_vector<double>()[0];
      return 1;
    }
    return 0;
  }));
}

TEST_CASE("faults: a rank that never arrives is named by the rendezvous") {
  // 3 s: ranks 0 and 1 must both arrive within it on a loaded machine (ctest -j), rank 2 never does.
  ProcessGroupOptions quick{std::chrono::milliseconds(3000), std::chrono::milliseconds(100)};
  const auto results = run_ranks(
      3, [](ProcessGroup&, std::ostream&) { return 0; }, quick, std::chrono::seconds(20), [](int r) { return r != 2; });
  INFO(results[0].message);
  CHECK(results[0].status == 1);
  CHECK(results[0].message.find("rendezvous at port") != std::string::npos);
  CHECK(results[0].message.find("rank 2 of 3 never arrived") != std::string::npos);
  CHECK(results[1].status == 1);
}

TEST_CASE("faults: a dead rank makes the other's collective fail naming it, within the timeout") {
  ProcessGroupOptions quick{std::chrono::milliseconds(3000), std::chrono::milliseconds(100)};
  const auto results = run_ranks(
      2,
      [](ProcessGroup& g, std::ostream& msg) {
        Tensor t = ones({1000});
        g.cpu().all_reduce(t);
        if (g.rank() == 1) std::_Exit(9);  // dies between collectives
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        g.cpu().all_reduce(t);
        msg << "the all-reduce with a dead peer returned";
        return 0;
      },
      quick, std::chrono::seconds(30));
  INFO(results[0].message);
  CHECK(results[1].status == 9);
  CHECK(results[0].status == 1);
  CHECK(results[0].message.find("rank 0 of 2: all_reduce #2") != std::string::npos);
  CHECK(results[0].message.find("rank 1") != std::string::npos);
  CHECK(results[0].seconds < 3.0 + 5.0);
}

TEST_CASE("faults: a rank lost after the rendezvous, before Gloo's mesh connects, fails the others with an error") {
  // Rank 1 here is this test process speaking the store's protocol: it arrives at the rendezvous
  // and beats, but never connects Gloo's mesh. Rank 0's process group, whose heartbeat thread is
  // already running then, must throw the connect error (it once ended in std::terminate: 134).
  const int port = free_port();
  const auto dir = std::filesystem::temp_directory_path() / ("mlr_dist_mesh_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    std::ofstream msg(dir / "rank-0");
    int status = 0;
    try {
      LaunchInfo launch;
      launch.rank = 0;
      launch.world_size = 2;
      launch.local_world_size = 2;
      launch.master_port = port;
      launch.launcher = "test";
      ProcessGroup group(launch, {std::chrono::milliseconds(1500), std::chrono::milliseconds(100)});
      msg << "the process group was built without rank 1 in Gloo's mesh";
    } catch (const std::exception& e) {
      msg << e.what();
      status = 1;
    }
    msg.flush();
    std::_Exit(status);
  }
  int wstatus = 0;
  {
    StoreClient rank1("127.0.0.1", port, std::chrono::milliseconds(5000), "rank 1");
    rank1.set("rdzv/1", "test pid 0");
    rank1.wait_get("rdzv/complete", std::chrono::milliseconds(5000), "rank 0 never completed the rendezvous");
    int64_t beat = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (::waitpid(pid, &wstatus, WNOHANG) != pid) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &wstatus, 0);
        break;
      }
      try {
        rank1.set("hb/1", std::to_string(++beat) + " 0 start");
      } catch (const std::exception&) {
        // rank 0's store went away with its process
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  std::ifstream in(dir / "rank-0");
  std::stringstream message;
  message << in.rdbuf();
  std::filesystem::remove_all(dir);
  INFO(message.str());
  REQUIRE(WIFEXITED(wstatus));
  CHECK(WEXITSTATUS(wstatus) == 1);
  CHECK(message.str().find("rank 0 of 2: connect (Gloo full mesh)") != std::string::npos);
}

TEST_CASE("faults: a hung rank is named by the others' timeout, and the watchdog ends it when rank 0 leaves") {
  ProcessGroupOptions quick{std::chrono::milliseconds(2000), std::chrono::milliseconds(100)};
  const auto results = run_ranks(
      2,
      [](ProcessGroup& g, std::ostream& msg) {
        Tensor t = ones({10});
        g.cpu().all_reduce(t);
        if (g.rank() == 1) {
          std::this_thread::sleep_for(std::chrono::seconds(30));  // hangs outside any collective
          return 0;
        }
        g.cpu().all_reduce(t);
        return 0;
      },
      quick, std::chrono::seconds(40));
  INFO(results[0].message);
  CHECK(results[0].status == 1);
  CHECK(results[0].message.find("all_reduce #2") != std::string::npos);
  CHECK(results[0].message.find("rank 1 is alive but still at collective #1 (all_reduce)") != std::string::npos);
  CHECK(results[0].seconds < 2.0 + 5.0);
  // Rank 1's watchdog sees rank 0's store go and exits with status 1 long before its sleep ends.
  CHECK(results[1].status == 1);
  CHECK(results[1].seconds < 15.0);
}

// Runs a function in one forked process per rank, each joined to a process group over
// 127.0.0.1 (the dist tests: no threads exist in the test process before the fork), and collects
// each rank's exit status, message and exit time.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <doctest/doctest.h>

#include "dist/process_group.h"

namespace mlr::test {

using dist::LaunchInfo;
using dist::ProcessGroup;
using dist::ProcessGroupOptions;

inline int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

struct RankResult {
  int status = -1;      // exit status (or 128 + signal)
  std::string message;  // what the rank wrote to its message file
  double seconds = 0;   // from the start of the run to this rank's exit
};

// Runs body(group) in `world` forked processes, ranks 0..world-1; `joins(rank)` false leaves a rank
// out (it never starts). A rank's exit status is body's return value, or 1 with the message of an
// exception. Kills every rank still running after `limit`.
inline std::vector<RankResult> run_ranks(int world, const std::function<int(ProcessGroup&, std::ostream&)>& body,
                                  ProcessGroupOptions options = {std::chrono::milliseconds(10000),
                                                                 std::chrono::milliseconds(100)},
                                  std::chrono::seconds limit = std::chrono::seconds(60),
                                  const std::function<bool(int)>& joins = [](int) { return true; }) {
  const int port = free_port();
  const auto dir = std::filesystem::temp_directory_path() / ("mlr_dist_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::vector<pid_t> pids(world, -1);
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < world; ++r) {
    if (!joins(r)) continue;
    std::fflush(nullptr);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      std::ofstream msg(dir / ("rank-" + std::to_string(r)));
      int status = 1;
      try {
        LaunchInfo launch;
        launch.rank = r;
        launch.world_size = world;
        launch.local_rank = r;
        launch.local_world_size = world;
        launch.master_port = port;
        launch.launcher = "test";
        ProcessGroup group(launch, options);
        status = body(group, msg);
      } catch (const std::exception& e) {
        msg << e.what();
        status = 1;
      }
      msg.flush();
      std::_Exit(status);
    }
    pids[r] = pid;
  }
  std::vector<RankResult> results(world);
  int running = 0;
  for (pid_t p : pids) running += p > 0;
  while (running > 0) {
    for (int r = 0; r < world; ++r) {
      if (pids[r] <= 0) continue;
      int wstatus = 0;
      if (::waitpid(pids[r], &wstatus, WNOHANG) == pids[r]) {
        results[r].status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);
        results[r].seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        pids[r] = -1;
        --running;
      }
    }
    if (std::chrono::steady_clock::now() - start > limit) {
      for (pid_t p : pids)
        if (p > 0) ::kill(p, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  for (int r = 0; r < world; ++r) {
    std::ifstream in(dir / ("rank-" + std::to_string(r)));
    std::stringstream ss;
    ss << in.rdbuf();
    results[r].message = ss.str();
  }
  std::filesystem::remove_all(dir);
  return results;
}

inline void check_all_ok(const std::vector<RankResult>& results) {
  for (size_t r = 0; r < results.size(); ++r) {
    INFO("rank ", r, ": ", results[r].message);
    CHECK(results[r].status == 0);
  }
}

}  // namespace mlr::test

// The rendezvous store: a small TCP key-value server that rank 0 hosts at MASTER_ADDR:MASTER_PORT
// (as torchrun's TCPStore does), and its client. Ranks meet through it (every rank announces
// itself, then waits for the others), Gloo exchanges its transport addresses through it, NCCL its
// unique id, and the heartbeats of dist/process_group.h live in it.
//
// Protocol (one request, one reply, on one connection per client):
//   request  op:u8 ('S' set, 'G' get, 'A' add) | key length:u32 | key | value length:u32 | value
//   reply    'S': 1:u8;  'G': found:u8 | value length:u32 | value;  'A': new value:i64
// Integers in host byte order (every rank runs the same build on the same architecture).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mlr::dist {

class StoreServer {
 public:
  // Listens on every interface at `port` (0: a free port, see port()). Throws naming the port when
  // it is taken (another job on this node: set MASTER_PORT).
  explicit StoreServer(int port);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;
  int port() const { return port_; }

 private:
  void serve();
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  int port_ = 0;
  std::map<std::string, std::string> data_;
  std::thread thread_;
};

class StoreClient {
 public:
  // Connects to host:port, retrying until `timeout` (rank 0 may start its server after the others
  // start); `who` ("rank 3") prefixes errors. Every reply is awaited at most `timeout`.
  StoreClient(const std::string& host, int port, std::chrono::milliseconds timeout, std::string who);
  ~StoreClient();
  StoreClient(const StoreClient&) = delete;
  StoreClient& operator=(const StoreClient&) = delete;

  void set(const std::string& key, const std::string& value);
  std::optional<std::string> try_get(const std::string& key);
  // Polls until the key is present; after `timeout` throws mlr::Error with `missing()`'s text.
  std::string wait_get(const std::string& key, std::chrono::milliseconds timeout,
                       const std::string& what_is_missing);
  int64_t add(const std::string& key, int64_t delta);
  std::string address() const;

 private:
  std::string request(char op, const std::string& key, const std::string& value);
  std::string host_;
  int port_ = 0;
  std::string who_;
  int fd_ = -1;
  std::mutex mutex_;
};

}  // namespace mlr::dist

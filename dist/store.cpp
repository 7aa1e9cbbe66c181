#include "dist/store.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "base/error.h"

namespace mlr::dist {

namespace {

bool send_all(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool recv_all(int fd, void* data, size_t n) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

bool recv_string(int fd, std::string& s) {
  uint32_t n = 0;
  if (!recv_all(fd, &n, sizeof n) || n > (1u << 28)) return false;
  s.resize(n);
  return n == 0 || recv_all(fd, s.data(), n);
}

void append_string(std::string& out, const std::string& s) {
  const uint32_t n = static_cast<uint32_t>(s.size());
  out.append(reinterpret_cast<const char*>(&n), sizeof n);
  out += s;
}

}  // namespace

StoreServer::StoreServer(int port) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  MLR_CHECK(listen_fd_ >= 0, "dist: rendezvous store: socket(): {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(listen_fd_, 1024) != 0) {
    const int err = errno;
    ::close(listen_fd_);
    throw Error(fmt::format("dist: rank 0 cannot host the rendezvous store on port {}: {} (another job on this node? "
                            "set MASTER_PORT, or MLR_STORE_PORT, to a free port)",
                            port, std::strerror(err)));
  }
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  MLR_CHECK(::pipe2(wake_pipe_, O_CLOEXEC) == 0, "dist: rendezvous store: pipe(): {}", std::strerror(errno));
  thread_ = std::thread([this] { serve(); });
}

StoreServer::~StoreServer() {
  const char byte = 0;
  (void)!::write(wake_pipe_[1], &byte, 1);
  if (thread_.joinable()) thread_.join();
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

// One thread, poll() over the listener, the wake pipe and every client. A request is read whole
// once its first byte arrives (clients send a request in one write); a client that disconnects or
// sends garbage is dropped.
void StoreServer::serve() {
  std::vector<int> clients;
  while (true) {
    std::vector<pollfd> fds = {{wake_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (int c : clients) fds.push_back({c, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[0].revents) break;
    std::vector<int> keep;  // the clients polled next time: those still connected, and new ones
    if (fds[1].revents & POLLIN) {
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) {
        const int one = 1;
        ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        timeval tv{10, 0};  // a client stalled mid-request is dropped, not waited for
        ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        keep.push_back(c);
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      const int c = fds[i].fd;
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) {
        keep.push_back(c);
        continue;
      }
      char op = 0;
      std::string key, value, reply;
      bool ok = recv_all(c, &op, 1) && recv_string(c, key) && recv_string(c, value);
      if (ok && op == 'S') {
        data_[key] = value;
        reply.push_back(1);
      } else if (ok && op == 'G') {
        auto it = data_.find(key);
        reply.push_back(it != data_.end() ? 1 : 0);
        append_string(reply, it != data_.end() ? it->second : std::string());
      } else if (ok && op == 'A') {
        auto it = data_.find(key);
        int64_t v = it != data_.end() ? std::stoll(it->second) : 0;
        v += std::stoll(value);
        data_[key] = std::to_string(v);
        reply.append(reinterpret_cast<const char*>(&v), sizeof v);
      } else {
        ok = false;
      }
      if (ok && send_all(c, reply.data(), reply.size())) {
        keep.push_back(c);
      } else {
        ::close(c);
      }
    }
    clients = std::move(keep);
  }
  for (int c : clients) ::close(c);
}

StoreClient::StoreClient(const std::string& host, int port, std::chrono::milliseconds timeout, std::string who)
    : host_(host), port_(port), who_(std::move(who)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::string last_error;
  while (true) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int gai = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
    if (gai != 0) {
      last_error = fmt::format("cannot resolve '{}': {}", host, gai_strerror(gai));
    } else {
      for (addrinfo* a = res; a != nullptr && fd_ < 0; a = a->ai_next) {
        const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) continue;
        if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
          fd_ = fd;
        } else {
          last_error = std::strerror(errno);
          ::close(fd);
        }
      }
      ::freeaddrinfo(res);
    }
    if (fd_ >= 0) break;
    MLR_CHECK(std::chrono::steady_clock::now() < deadline,
              "dist: {}: no rendezvous store at {}:{} after {:.0f} s ({}): rank 0 never started it, or MASTER_ADDR / "
              "MASTER_PORT differ between ranks",
              who_, host, port, std::chrono::duration<double>(timeout).count(), last_error);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(timeout).count();
  timeval tv{static_cast<time_t>(std::max<int64_t>(1, seconds)), 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

StoreClient::~StoreClient() {
  if (fd_ >= 0) ::close(fd_);
}

std::string StoreClient::address() const { return fmt::format("{}:{}", host_, port_); }

std::string StoreClient::request(char op, const std::string& key, const std::string& value) {
  std::lock_guard lock(mutex_);
  std::string msg(1, op);
  append_string(msg, key);
  append_string(msg, value);
  auto fail = [&](const char* what) {
    return Error(fmt::format("dist: {}: the rendezvous store at {} (hosted by rank 0) {} ({}): rank 0 has exited or "
                             "is unreachable",
                             who_, address(), what, errno ? std::strerror(errno) : "connection closed"));
  };
  errno = 0;
  if (!send_all(fd_, msg.data(), msg.size())) throw fail("refused a request");
  if (op == 'S') {
    char ok = 0;
    if (!recv_all(fd_, &ok, 1)) throw fail("did not answer");
    return {};
  }
  if (op == 'A') {
    int64_t v = 0;
    if (!recv_all(fd_, &v, sizeof v)) throw fail("did not answer");
    return std::to_string(v);
  }
  char found = 0;
  std::string out;
  if (!recv_all(fd_, &found, 1) || !recv_string(fd_, out)) throw fail("did not answer");
  return found ? "1" + out : std::string("0");
}

void StoreClient::set(const std::string& key, const std::string& value) { request('S', key, value); }

std::optional<std::string> StoreClient::try_get(const std::string& key) {
  const std::string r = request('G', key, {});
  if (r[0] == '0') return std::nullopt;
  return r.substr(1);
}

std::string StoreClient::wait_get(const std::string& key, std::chrono::milliseconds timeout,
                                  const std::string& what_is_missing) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    if (auto v = try_get(key)) return *v;
    MLR_CHECK(std::chrono::steady_clock::now() < deadline, "dist: {}: timed out after {:.0f} s: {}", who_,
              std::chrono::duration<double>(timeout).count(), what_is_missing);
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
}

int64_t StoreClient::add(const std::string& key, int64_t delta) {
  return std::stoll(request('A', key, std::to_string(delta)));
}

}  // namespace mlr::dist

// SPDX-License-Identifier: Apache-2.0
// TcpRendezvous (see tcp_rendezvous.h): POSIX sockets, non-blocking connect
// and poll() for every wait, so that no step outlives the deadline.
#include "tcp_rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <thread>
#include <vector>

#include "neox/error.h"

namespace neox {
namespace {

using Clock = std::chrono::steady_clock;

constexpr char kMagic[8] = {'N', 'E', 'O', 'X', 'R', 'D', 'V', '1'};
constexpr std::size_t kHelloBytes = sizeof(kMagic) + 3 * 4;
constexpr std::size_t kReplyHeaderBytes = sizeof(kMagic) + 4;
enum Status : std::uint32_t { kOk = 0, kWorldSize = 1, kBadRank = 2, kDuplicateRank = 3, kBlobSize = 4 };

std::string errno_text(int e) { return std::strerror(e); }

std::string seconds_text(double s) {
  std::ostringstream os;
  os << s << " s";
  return os.str();
}

// A socket that closes itself.
class Socket {
 public:
  Socket() = default;
  explicit Socket(int fd) : fd_(fd) {}
  Socket(Socket&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Socket& operator=(Socket&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  int fd() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// Milliseconds left until `deadline` (0 when past), at most `cap_ms`.
int ms_left(Clock::time_point deadline, int cap_ms = 1 << 30) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<long long>(left, 0, cap_ms));
}

// Waits for `events` on fd until the deadline: true when ready.
bool wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, ms_left(deadline));
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) return false;
  }
}

// All of `bytes`, or false (error, end of stream or deadline; `why` says which).
bool read_all(int fd, void* out, std::size_t bytes, Clock::time_point deadline, std::string& why) {
  char* p = static_cast<char*>(out);
  while (bytes > 0) {
    if (!wait_for(fd, POLLIN, deadline)) {
      why = "no data before the deadline";
      return false;
    }
    const ssize_t n = ::recv(fd, p, bytes, 0);
    if (n == 0) {
      why = "the connection was closed";
      return false;
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      why = "recv: " + errno_text(errno);
      return false;
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

bool write_all(int fd, const void* data, std::size_t bytes, Clock::time_point deadline, std::string& why) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    if (!wait_for(fd, POLLOUT, deadline)) {
      why = "could not send before the deadline";
      return false;
    }
    const ssize_t n = ::send(fd, p, bytes, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      why = "send: " + errno_text(errno);
      return false;
    }
    p += n;
    bytes -= static_cast<std::size_t>(n);
  }
  return true;
}

void put_u32(std::vector<char>& out, std::uint32_t v) {
  const std::uint32_t be = htonl(v);
  const char* b = reinterpret_cast<const char*>(&be);
  out.insert(out.end(), b, b + 4);
}

std::uint32_t get_u32(const char* p) {
  std::uint32_t be = 0;
  std::memcpy(&be, p, 4);
  return ntohl(be);
}

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

// A listening socket on every interface: IPv6 dual-stack where the system
// has IPv6, else IPv4. Throws with errno's text.
Socket listen_on(int port, int& error) {
  for (int family : {AF_INET6, AF_INET}) {
    Socket s(::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!s.valid()) {
      error = errno;
      continue;
    }
    const int one = 1, zero = 0;
    ::setsockopt(s.fd(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc;
    if (family == AF_INET6) {
      ::setsockopt(s.fd(), IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_addr = in6addr_any;
      a.sin6_port = htons(static_cast<std::uint16_t>(port));
      rc = ::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_ANY);
      a.sin_port = htons(static_cast<std::uint16_t>(port));
      rc = ::bind(s.fd(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0 || ::listen(s.fd(), SOMAXCONN) != 0) {
      error = errno;
      // A taken port is taken for both families: say so rather than trying IPv4.
      if (error == EADDRINUSE || error == EACCES) return Socket();
      continue;
    }
    set_nonblocking(s.fd());
    return s;
  }
  return Socket();
}

// One connection to host:port, or an invalid socket with `why` set.
Socket connect_once(const std::string& host, int port, Clock::time_point deadline, std::string& why) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
  if (rc != 0) {
    why = "cannot resolve '" + host + "': " + ::gai_strerror(rc);
    return Socket();
  }
  Socket result;
  for (addrinfo* a = list; a && !result.valid(); a = a->ai_next) {
    Socket s(::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol));
    if (!s.valid()) {
      why = "socket: " + errno_text(errno);
      continue;
    }
    set_nonblocking(s.fd());
    if (::connect(s.fd(), a->ai_addr, a->ai_addrlen) != 0 && errno != EINPROGRESS) {
      why = "connect: " + errno_text(errno);
      continue;
    }
    // A connect attempt waits at most 2 s, so that a retry resolves the name again.
    const auto attempt = std::min(deadline, Clock::now() + std::chrono::seconds(2));
    if (!wait_for(s.fd(), POLLOUT, attempt)) {
      why = "connect: no answer";
      continue;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.fd(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      why = "connect: " + errno_text(err);
      continue;
    }
    const int one = 1;
    ::setsockopt(s.fd(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    result = std::move(s);
  }
  ::freeaddrinfo(list);
  return result;
}

std::string status_text(std::uint32_t status) {
  switch (status) {
    case kWorldSize:
      return "the world sizes differ";
    case kBadRank:
      return "the rank is not a rank of rank 0's job";
    case kDuplicateRank:
      return "another process already connected with this rank";
    case kBlobSize:
      return "the blob sizes differ (different neox or NCCL versions?)";
    default:
      return "unknown status " + std::to_string(status);
  }
}

}  // namespace

TcpRendezvous::TcpRendezvous(std::string host, const std::string& port, int rank, int world_size, double timeout_s)
    : host_(std::move(host)), rank_(rank), world_size_(world_size), timeout_s_(timeout_s) {
  const std::string where =
      "TCP rendezvous (rank " + std::to_string(rank) + " of " + std::to_string(world_size) + "): ";
  if (host_.empty())
    throw Error(where + "MASTER_ADDR is not set: set MASTER_ADDR to the host of rank 0 and MASTER_PORT to a free port");
  bool digits = !port.empty() && port.size() <= 5;
  for (char c : port) digits = digits && c >= '0' && c <= '9';
  port_ = digits ? std::stoi(port) : 0;
  if (port_ < 1 || port_ > 65535) throw Error(where + "MASTER_PORT='" + port + "' is not a port number (1 to 65535)");
  if (world_size < 1 || rank < 0 || rank >= world_size)
    throw Error(where + "rank " + std::to_string(rank) + " is not a rank of a job of " + std::to_string(world_size));
  if (!(timeout_s > 0)) throw Error(where + "the timeout must be positive, got " + seconds_text(timeout_s));
}

std::string TcpRendezvous::endpoint() const {
  return "MASTER_ADDR:MASTER_PORT = " + host_ + ":" + std::to_string(port_);
}

std::string TcpRendezvous::prefix() const {
  return "TCP rendezvous at " + endpoint() + " (rank " + std::to_string(rank_) + " of " + std::to_string(world_size_) +
         "): ";
}

void TcpRendezvous::broadcast(void* blob, std::size_t bytes) {
  if (bytes > (1u << 20)) throw Error(prefix() + std::to_string(bytes) + " bytes is more than a rendezvous carries");
  if (world_size_ == 1) return;
  if (rank_ == 0)
    serve(blob, bytes);
  else
    fetch(blob, bytes);
}

void TcpRendezvous::serve(const void* blob, std::size_t bytes) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  int error = 0;
  Socket listener = listen_on(port_, error);
  if (!listener.valid())
    throw Error(prefix() + "cannot listen on port " + std::to_string(port_) + ": " + errno_text(error) +
                (error == EADDRINUSE ? " (another job may be using it: choose another MASTER_PORT)" : ""));

  std::vector<char> reply(kMagic, kMagic + sizeof kMagic);
  put_u32(reply, kOk);
  reply.insert(reply.end(), static_cast<const char*>(blob), static_cast<const char*>(blob) + bytes);
  std::vector<bool> served(static_cast<std::size_t>(world_size_), false);
  int remaining = world_size_ - 1;
  while (remaining > 0) {
    if (!wait_for(listener.fd(), POLLIN, deadline)) {
      std::string missing;
      int listed = 0;
      for (int r = 1; r < world_size_ && listed < 8; ++r)
        if (!served[static_cast<std::size_t>(r)]) missing += (listed++ ? ", " : "") + std::to_string(r);
      if (listed < remaining) missing += ", ...";
      throw Error(prefix() + std::to_string(world_size_ - 1 - remaining) + " of " + std::to_string(world_size_ - 1) +
                  " other ranks connected within " + seconds_text(timeout_s_) + " (missing: rank" +
                  (remaining > 1 ? "s " : " ") + missing +
                  "); check that every rank was started with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, "
                  "or raise timeout_s");
    }
    Socket conn(::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!conn.valid()) continue;  // the peer went away between poll and accept
    // A hello takes at most 5 s: a silent client cannot hold the others up.
    const auto hello_deadline = std::min(deadline, Clock::now() + std::chrono::seconds(5));
    char hello[kHelloBytes];
    std::string why;
    if (!read_all(conn.fd(), hello, sizeof hello, hello_deadline, why) ||
        std::memcmp(hello, kMagic, sizeof kMagic) != 0)
      continue;  // not one of ours
    const std::uint32_t peer = get_u32(hello + 8), size = get_u32(hello + 12), peer_bytes = get_u32(hello + 16);
    std::string problem;
    Status status = kOk;
    if (size != static_cast<std::uint32_t>(world_size_)) {
      status = kWorldSize;
      problem = "a process with rank " + std::to_string(peer) + " says the world size is " + std::to_string(size) +
                ", this rank says " + std::to_string(world_size_);
    } else if (peer < 1 || peer >= static_cast<std::uint32_t>(world_size_)) {
      status = kBadRank;
      problem = "a process says it is rank " + std::to_string(peer) + ", not a rank in [1, " +
                std::to_string(world_size_) + ")";
    } else if (served[peer]) {
      status = kDuplicateRank;
      problem = "two processes say they are rank " + std::to_string(peer) + " (RANK set the same twice?)";
    } else if (peer_bytes != bytes) {
      status = kBlobSize;
      problem = "rank " + std::to_string(peer) + " expects " + std::to_string(peer_bytes) + " bytes, this rank sends " +
                std::to_string(bytes) + " (different neox or NCCL versions?)";
    }
    if (status != kOk) {
      std::vector<char> refusal(kMagic, kMagic + sizeof kMagic);
      put_u32(refusal, status);
      write_all(conn.fd(), refusal.data(), refusal.size(), hello_deadline, why);
      throw Error(prefix() + problem);
    }
    if (!write_all(conn.fd(), reply.data(), reply.size(), hello_deadline, why)) continue;  // it may retry
    served[peer] = true;
    --remaining;
  }
}

void TcpRendezvous::fetch(void* blob, std::size_t bytes) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
  std::vector<char> hello(kMagic, kMagic + sizeof kMagic);
  put_u32(hello, static_cast<std::uint32_t>(rank_));
  put_u32(hello, static_cast<std::uint32_t>(world_size_));
  put_u32(hello, static_cast<std::uint32_t>(bytes));
  std::string last = "no attempt";
  auto pause = std::chrono::milliseconds(20);
  while (Clock::now() < deadline) {
    Socket s = connect_once(host_, port_, deadline, last);
    if (s.valid()) {
      char header[kReplyHeaderBytes];
      if (write_all(s.fd(), hello.data(), hello.size(), deadline, last) &&
          read_all(s.fd(), header, sizeof header, deadline, last)) {
        if (std::memcmp(header, kMagic, sizeof kMagic) != 0)
          throw Error(prefix() + "the process at that address is not a neox rendezvous (wrong MASTER_PORT?)");
        const std::uint32_t status = get_u32(header + 8);
        if (status != kOk) throw Error(prefix() + "rank 0 refused this rank: " + status_text(status));
        if (read_all(s.fd(), blob, bytes, deadline, last)) return;
      }
    }
    // Rank 0 may not listen yet: wait a little longer each time, up to 1 s.
    std::this_thread::sleep_for(std::min(pause, std::chrono::milliseconds(ms_left(deadline))));
    pause = std::min(pause * 2, std::chrono::milliseconds(1000));
  }
  throw Error(prefix() + "rank 0 did not answer within " + seconds_text(timeout_s_) + " (last error: " + last +
              "); check that rank 0 is running and that MASTER_ADDR names its host as seen from this one, or raise "
              "timeout_s");
}

}  // namespace neox

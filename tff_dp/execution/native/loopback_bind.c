/*
 * loopback_bind: an LD_PRELOAD shim that keeps a server off the network.
 *
 * TFF's C++ worker (worker_binary) serves unauthenticated gRPC on "[::]:port"
 * and has no flag to choose the address. Whoever can connect to it can run
 * TensorFlow graphs (read and write files) as the user who started it, so
 * loopback is not enough on a machine with other users. tff-dp preloads this
 * library into the worker, and only into the worker (tff_dp/execution/runtime.py).
 *
 * Unix-socket mode (what tff-dp uses): when the environment variable
 * TFF_DP_WORKER_SOCKET names an absolute path, the first bind() of a stream
 * socket to a wildcard address (0.0.0.0 or ::, any port) -- the worker's
 * listening socket -- is replaced by a bind of a fresh AF_UNIX stream socket
 * to that path: the Unix socket is bound first, given the TCP socket's file
 * status flags (O_NONBLOCK) and close-on-exec flag, and dup3()ed over the
 * caller's fd, so the caller's listen(), accept() and epoll work on it. The
 * path lies in a 0700 directory that tff-dp created, so the kernel refuses
 * every other user (tff_dp/execution/runtime.py checks the directory and the peer's
 * pid). Every later wildcard bind of a stream socket fails with EADDRINUSE,
 * and so does the first one if the Unix bind fails (e.g. the path exists):
 * the worker then fails to start, and never falls back to TCP. gRPC sets its
 * TCP options (TCP_NODELAY, SO_REUSEPORT, ...) before bind(), on the TCP
 * socket, so none of them reaches the Unix socket. After bind() the worker
 * of TFF 0.87 only calls listen() and getsockname() on it (it accepts the
 * AF_UNIX address it reads back), and on each accepted connection its one
 * TCP option, TCP_INQ, fails with EOPNOTSUPP, which gRPC tolerates (seen
 * with strace): nothing needs faking.
 * Non-wildcard binds (gRPC's ::1 probe for IPv6 support, which never
 * listens) are passed through unchanged. A path that is set but unusable
 * (relative, too long) makes every wildcard stream bind fail (ENAMETOOLONG).
 *
 * Loopback mode (no TFF_DP_WORKER_SOCKET; also datagram sockets in
 * Unix-socket mode): every bind() to a wildcard address binds a loopback
 * address instead:
 *
 *   AF_INET  0.0.0.0                      -> 127.0.0.1
 *   AF_INET6 ::, dual-stack socket         -> ::ffff:127.0.0.1
 *   AF_INET6 ::, IPv6-only socket          -> ::1
 *
 * Why ::ffff:127.0.0.1 for a dual-stack socket rather than ::1: gRPC binds
 * one dual-stack socket when the OS allows it and then adds no IPv4 socket,
 * so ::1 would leave 127.0.0.1 unserved. A rewritten bind that fails is not
 * retried with the original address.
 *
 * Every other bind() (specific addresses, AF_UNIX, ...) is passed through
 * unchanged. The library is a plain shared object; it is built by setup.py as
 * an optional extension only so that pip compiles it, and must never be
 * imported by Python.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_ENV "TFF_DP_WORKER_SOCKET"

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn real_bind;
/* 0: loopback mode; 1: Unix-socket mode, path in socket_path; -1: the
 * variable is set but unusable (fail closed rather than serve TCP). */
static int socket_mode;
static char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
/* Set (atomically) by the first wildcard stream bind in Unix-socket mode. */
static int socket_taken;

/* Resolved once at load time, before any thread of the program exists, so
 * that bind() itself never races on these. */
__attribute__((constructor)) static void init(void) {
  real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
  const char *path = getenv(SOCKET_ENV);
  if (path == NULL) {
    return;
  }
  if (path[0] == '/' && strlen(path) < sizeof(socket_path)) {
    memcpy(socket_path, path, strlen(path) + 1);
    socket_mode = 1;
  } else {
    socket_mode = -1;
  }
}

static int is_dual_stack(int fd) {
  int v6only = 1;
  socklen_t size = sizeof(v6only);
  if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &size) != 0) {
    return 0;  /* Unknown: ::1 is the safe choice (never all interfaces). */
  }
  return v6only == 0;
}

static int is_stream(int fd) {
  int type = 0;
  socklen_t size = sizeof(type);
  return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 &&
         type == SOCK_STREAM;
}

static int is_wildcard(const struct sockaddr *addr, socklen_t len) {
  if (addr == NULL) {
    return 0;
  }
  if (addr->sa_family == AF_INET &&
      len >= (socklen_t)sizeof(struct sockaddr_in)) {
    struct sockaddr_in in4;
    memcpy(&in4, addr, sizeof(in4));
    return in4.sin_addr.s_addr == htonl(INADDR_ANY);
  }
  if (addr->sa_family == AF_INET6 &&
      len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 in6;
    memcpy(&in6, addr, sizeof(in6));
    return IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr);
  }
  return 0;
}

/* Makes `fd` a Unix stream socket bound to socket_path (header comment). */
static int bind_unix_instead(int fd) {
  if (socket_mode < 0) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (__atomic_exchange_n(&socket_taken, 1, __ATOMIC_SEQ_CST)) {
    errno = EADDRINUSE;  /* One listener, and never a TCP one. */
    return -1;
  }
  int status_flags = fcntl(fd, F_GETFL);
  int fd_flags = fcntl(fd, F_GETFD);
  if (status_flags < 0 || fd_flags < 0) {
    return -1;
  }
  int unix_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (unix_fd < 0) {
    return -1;
  }
  struct sockaddr_un address;
  memset(&address, 0, sizeof(address));
  address.sun_family = AF_UNIX;
  memcpy(address.sun_path, socket_path, strlen(socket_path) + 1);
  /* Bound before it replaces fd: on failure the caller keeps an unbound TCP
   * socket, which it closes. bind() never follows or replaces an existing
   * path, so a file planted there makes the worker fail, not serve. */
  if (real_bind(unix_fd, (const struct sockaddr *)&address,
                sizeof(address)) != 0 ||
      fcntl(unix_fd, F_SETFL, status_flags) != 0 ||
      dup3(unix_fd, fd, (fd_flags & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) {
    int saved = errno;
    close(unix_fd);
    errno = saved;
    return -1;
  }
  close(unix_fd);
  return 0;
}

static int bind_loopback_instead(int fd, const struct sockaddr *addr) {
  if (addr->sa_family == AF_INET) {
    struct sockaddr_in in4;
    memcpy(&in4, addr, sizeof(in4));
    in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return real_bind(fd, (const struct sockaddr *)&in4, sizeof(in4));
  }
  struct sockaddr_in6 in6;
  memcpy(&in6, addr, sizeof(in6));
  if (is_dual_stack(fd)) {
    static const unsigned char mapped_loopback[16] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
    memcpy(&in6.sin6_addr, mapped_loopback, sizeof(mapped_loopback));
  } else {
    in6.sin6_addr = in6addr_loopback;
  }
  in6.sin6_scope_id = 0;
  return real_bind(fd, (const struct sockaddr *)&in6, sizeof(in6));
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  if (real_bind == NULL) {
    errno = ENOSYS;
    return -1;
  }
  if (!is_wildcard(addr, len)) {
    return real_bind(fd, addr, len);
  }
  if (socket_mode != 0 && is_stream(fd)) {
    return bind_unix_instead(fd);
  }
  return bind_loopback_instead(fd, addr);
}

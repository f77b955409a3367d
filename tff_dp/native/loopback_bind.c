/*
 * loopback_bind: an LD_PRELOAD shim that confines a server to this machine.
 *
 * TFF's C++ worker (worker_binary) serves unauthenticated gRPC on "[::]:port"
 * and has no flag to choose the address. tff-dp preloads this library into the
 * worker, and only into the worker (tff_dp/runtime.py), so that every bind()
 * to a wildcard address binds a loopback address instead:
 *
 *   AF_INET  0.0.0.0                      -> 127.0.0.1
 *   AF_INET6 ::, dual-stack socket         -> ::ffff:127.0.0.1
 *   AF_INET6 ::, IPv6-only socket          -> ::1
 *
 * Why ::ffff:127.0.0.1 for a dual-stack socket rather than ::1: gRPC binds
 * one dual-stack socket when the OS allows it and then adds no IPv4 socket,
 * so ::1 would leave 127.0.0.1 unserved and only clients that reach
 * "localhost" over IPv6 would connect. The IPv4-mapped loopback serves
 * 127.0.0.1, which every Linux host has, and tff_dp/runtime.py dials exactly
 * that. When the socket is IPv6-only (or IPv6 is unavailable), gRPC binds
 * 0.0.0.0 as well (or instead), which becomes 127.0.0.1. Either way nothing
 * ends up on a wildcard address: a rewritten bind that fails is not retried
 * with the original address.
 *
 * Every other bind() (specific addresses, AF_UNIX, ...) is passed through
 * unchanged. The library is a plain shared object; it is built by setup.py as
 * an optional extension only so that pip compiles it, and must never be
 * imported by Python.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn real_bind;

/* Resolved once at load time, before any thread of the program exists, so
 * that bind() itself never races on the pointer. */
__attribute__((constructor)) static void resolve_real_bind(void) {
  real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");
}

static int is_dual_stack(int fd) {
  int v6only = 1;
  socklen_t size = sizeof(v6only);
  if (getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &size) != 0) {
    return 0;  /* Unknown: ::1 is the safe choice (never all interfaces). */
  }
  return v6only == 0;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
  if (real_bind == NULL) {
    errno = ENOSYS;
    return -1;
  }
  if (addr != NULL && addr->sa_family == AF_INET &&
      len >= (socklen_t)sizeof(struct sockaddr_in)) {
    struct sockaddr_in in4;
    memcpy(&in4, addr, sizeof(in4));
    if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) {
      in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      return real_bind(fd, (const struct sockaddr *)&in4, sizeof(in4));
    }
  } else if (addr != NULL && addr->sa_family == AF_INET6 &&
             len >= (socklen_t)sizeof(struct sockaddr_in6)) {
    struct sockaddr_in6 in6;
    memcpy(&in6, addr, sizeof(in6));
    if (IN6_IS_ADDR_UNSPECIFIED(&in6.sin6_addr)) {
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
  }
  return real_bind(fd, addr, len);
}

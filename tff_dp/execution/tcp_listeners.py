"""TCP ports a process listens on, read from /proc/net, and which addresses are loopback.

A confined worker listens on no TCP port; these tell an exposed one (an
ineffective shim, or `allow_unconfined_worker`) and whom it is exposed to.
"""

import ipaddress
import os
import socket
from typing import Optional

_TCP_LISTEN = '0A'  # State column of /proc/net/tcp{,6}.


def _proc_address(hex_address: str) -> str:
  """Text form of an address as /proc/net/tcp{,6} prints it."""
  raw = bytes.fromhex(hex_address)
  # The kernel prints each 32-bit word in host (little-endian) byte order.
  packed = b''.join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
  family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
  return socket.inet_ntop(family, packed)


def listening_addresses(port: int, *, pid: Optional[int] = None) -> list[str]:
  """Local addresses of the TCP sockets listening on `port`.

  Args:
    port: The TCP port.
    pid: Read the network namespace of this process (default: ours).

  Returns:
    Addresses in text form, e.g. ['127.0.0.1'] or ['::'] (all interfaces);
    empty if nothing listens or /proc is not available.
  """
  proc = f'/proc/{pid}/net' if pid is not None else '/proc/net'
  addresses = []
  for name in ('tcp', 'tcp6'):
    try:
      with open(os.path.join(proc, name)) as f:
        lines = f.read().splitlines()[1:]
    except OSError:
      continue
    for line in lines:
      fields = line.split()
      local, state = fields[1], fields[3]
      address, hex_port = local.split(':')
      if state == _TCP_LISTEN and int(hex_port, 16) == port:
        addresses.append(_proc_address(address))
  return addresses


def is_loopback(address: str) -> bool:
  """True for 127.0.0.0/8, ::1 and IPv4-mapped loopback (::ffff:127.x)."""
  ip = ipaddress.ip_address(address)
  mapped = getattr(ip, 'ipv4_mapped', None)
  return ip.is_loopback or (mapped is not None and mapped.is_loopback)

"""Where remote workers are: `--workers=HOST:PORT,...` parsed, without importing TensorFlow.

The training flags validate --workers with `parse_workers` at parse time, so
a typo stops the program before anything heavy is imported.
"""

import dataclasses
import ipaddress


@dataclasses.dataclass(frozen=True)
class WorkerAddress:
  host: str
  port: int

  def __str__(self) -> str:
    return (f'[{self.host}]:{self.port}'
            if ':' in self.host else f'{self.host}:{self.port}')


def parse_workers(text: str) -> list[WorkerAddress]:
  """'host:port,host:port' (IPv6 as [addr]:port) -> addresses.

  Raises:
    ValueError: One line naming the entry that is not HOST:PORT.
  """
  addresses = []
  for entry in (e.strip() for e in text.split(',')):
    host, sep, port = entry.rpartition(':')
    host = host[1:-1] if host.startswith('[') and host.endswith(']') else host
    ok = bool(sep and host and port.isdigit() and 1 <= int(port) <= 65535)
    if ok and ':' in host:
      try:
        ipaddress.IPv6Address(host)
      except ValueError:
        ok = False
    if not ok or any(c in host for c in ' /[]'):
      raise ValueError(f'--workers: {entry!r} is not HOST:PORT (port in '
                       '[1, 65535]; IPv6 as [ADDR]:PORT)')
    addresses.append(WorkerAddress(host, int(port)))
  if len(set(addresses)) != len(addresses):
    raise ValueError(f'--workers={text}: a worker is named twice')
  return addresses

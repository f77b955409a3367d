"""The peers' Python environments: Flower and pfl, pinned, cached, made once.

`./run.sh bench --peers` compares tff-dp with two other federated-learning
simulators on the same workloads. They cannot share tff-dp's environment (TFF
pins TF 2.14, numpy < 2 and its own grpc/protobuf; Flower brings Ray, pfl
PyTorch), so each peer gets its own virtual environment, installed from a
fully pinned lock file committed beside this module
(`benchmarks/peer_locks/<peer>.lock`, made with `pip freeze` from the first
install) with `pip install --no-deps`, exactly as `requirements.lock` is for
tff-dp. The environment lives outside the repository, under
`$XDG_CACHE_HOME/tff-dp/peers/` (default `~/.cache`), named by a hash of the
lock file and the interpreter's version: a changed lock makes a new one, an
unchanged one is reused (created once per machine; about 1-3 minutes each
with a warm pip cache).

PyTorch for both peers is the CPU build `torch==2.13.0` (on this machine's
disk; see the README's dependency notes). Pure Python plus the standard
library: the orchestrator imports this module without TensorFlow.
"""

import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import sys
from typing import Optional

_LOCK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         'peer_locks')
# A marker written last: an environment without it was interrupted mid-way
# and is rebuilt.
_READY = '.tff-dp-ready'


@dataclasses.dataclass(frozen=True)
class Peer:
  """One peer framework.

  Attributes:
    name: Its name in the report ('flower', 'pfl').
    version: The framework's release (also pinned in its lock file).
    module: The benchmark engine run inside its environment
      (`python -m <module> --spec=... --out=...`).
  """
  name: str
  version: str
  module: str

  @property
  def lock_path(self) -> str:
    return os.path.join(_LOCK_DIR, f'{self.name}.lock')


PEERS = (
    Peer(name='flower', version='1.42.0', module='benchmarks.peer_flower'),
    Peer(name='pfl', version='0.6.0', module='benchmarks.peer_pfl'),
)


class PeerEnvError(RuntimeError):
  """A peer's environment could not be made (names the peer and the log)."""


def cache_root() -> str:
  base = os.environ.get('XDG_CACHE_HOME') or os.path.join(
      os.path.expanduser('~'), '.cache')
  return os.path.join(base, 'tff-dp', 'peers')


def env_dir(peer: Peer, python: str = sys.executable) -> str:
  """Where `peer`'s environment lives: keyed by its lock and the Python."""
  with open(peer.lock_path, 'rb') as f:
    digest = hashlib.sha256(f.read())
  digest.update(platform.python_version().encode())
  digest.update(os.path.realpath(python).encode())
  return os.path.join(cache_root(), f'{peer.name}-{digest.hexdigest()[:12]}')


def env_python(peer: Peer) -> str:
  return os.path.join(env_dir(peer), 'bin', 'python')


def is_ready(peer: Peer) -> bool:
  return os.path.exists(os.path.join(env_dir(peer), _READY))


def ensure_env(peer: Peer,
               *,
               log_path: str,
               python: Optional[str] = None) -> str:
  """Makes `peer`'s environment if it is not there yet; returns its Python.

  Args:
    peer: The peer.
    log_path: Where pip's output goes (named in the error on failure).
    python: The interpreter to base the environment on (default: this one,
      tff-dp's Python 3.11).

  Raises:
    PeerEnvError: If venv or pip fails.
  """
  python = python or sys.executable
  target = env_dir(peer, python)
  if os.path.exists(os.path.join(target, _READY)):
    return os.path.join(target, 'bin', 'python')
  shutil.rmtree(target, ignore_errors=True)
  os.makedirs(os.path.dirname(target), exist_ok=True)
  steps = (
      [python, '-m', 'venv', target],
      [
          os.path.join(target, 'bin', 'python'), '-m', 'pip', 'install',
          '--no-deps', '--disable-pip-version-check', '-r', peer.lock_path
      ],
  )
  with open(log_path, 'ab') as log:
    for step in steps:
      log.write(f'$ {" ".join(step)}\n'.encode())
      log.flush()
      completed = subprocess.run(step,
                                 stdout=log,
                                 stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL,
                                 check=False)
      if completed.returncode != 0:
        raise PeerEnvError(
            f'making the {peer.name} environment failed (exit '
            f'{completed.returncode} of {step[0]} {step[1]}...); see {log_path}'
        )
  with open(os.path.join(target, _READY), 'w') as f:
    f.write(peer.version + '\n')
  return os.path.join(target, 'bin', 'python')

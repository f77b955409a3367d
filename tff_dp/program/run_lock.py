"""One training process per run directory: an exclusive lock on the directory.

What it protects: the privacy accountant's assumption that each round is
released once. Two trainers in one directory (a resume started while the run
still runs, two runs given the same name) would each release the same rounds
with independent noise over the same cohorts (the sampling secret is the
run's), while the ledger charges them once; their files would also
contradict each other. A trainer therefore holds `fcntl.flock(LOCK_EX)` on
`LOCK_FILE` inside the run directory from before it reads anything there for
a resume, or writes anything, until it exits. The kernel drops the lock when
the process dies, even by SIGKILL, so a crash leaves no stale lock to clean;
the file (with the last holder's pid) stays behind and is harmless. The
descriptor is not inherited by child processes (Python opens it
close-on-exec), so an orphaned TFF worker cannot keep the lock.

Readers (`./run.sh epsilon --run_dir`) never take the lock: `live_holder`
tells them, read-only through /proc/locks, whether a trainer holds it.
"""

import fcntl
import os
from typing import Optional

LOCK_FILE = '.tff-dp-run.lock'


class RunLockedError(RuntimeError):
  """Another process holds the run directory's lock."""

  def __init__(self, run_dir: str, pid: Optional[int]):
    holder = f'pid {pid}' if pid is not None else 'pid unknown'
    super().__init__(
        f'run directory {run_dir} is in use by another tff-dp process '
        f'({holder}); one process at a time writes in a run directory: wait '
        'for it to end, or choose another --run_name')
    self.run_dir = run_dir
    self.pid = pid


def _recorded_pid(fd: int) -> Optional[int]:
  """The pid the holder wrote into the lock file, or None."""
  try:
    text = os.pread(fd, 32, 0).decode('ascii', 'replace').strip()
  except OSError:
    return None
  return int(text) if text.isdigit() else None


class RunLock:
  """The exclusive lock on a run directory, as a context manager.

      with RunLock(run_dir):
        ...  # Read for a resume, train, release.

  `acquire` raises `RunLockedError` (having written nothing: the lock file
  of a live holder already exists) when another process, or another
  `RunLock` of this one, holds it.
  """

  def __init__(self, run_dir: str):
    self.run_dir = run_dir
    self.path = os.path.join(run_dir, LOCK_FILE)
    self._fd: Optional[int] = None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self) -> 'RunLock':
    """Takes the lock without waiting, then records our pid in the file."""
    if self._fd is not None:
      return self
    # Not truncated on open: a holder's pid must survive our failed attempt.
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      pid = _recorded_pid(fd) or live_holder(self.run_dir)
      os.close(fd)
      raise RunLockedError(self.run_dir, pid) from None
    except BaseException:
      os.close(fd)
      raise
    self._fd = fd
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'{os.getpid()}\n'.encode('ascii'), 0)
    return self

  def release(self) -> None:
    """Drops the lock (closing the descriptor drops it); idempotent."""
    if self._fd is not None:
      fd, self._fd = self._fd, None
      os.close(fd)

  def __enter__(self) -> 'RunLock':
    return self.acquire()

  def __exit__(self, *exc_info) -> None:
    self.release()


def live_holder(run_dir: str) -> Optional[int]:
  """The pid of the process holding `run_dir`'s lock, or None if none does.

  Read-only: never opens the lock file, so a reader cannot delay or fail a
  trainer. Reads Linux's /proc/locks (FLOCK entries name the device and
  inode of the locked file); elsewhere, or if the file is gone, None.
  """
  try:
    st = os.stat(os.path.join(run_dir, LOCK_FILE))
    with open('/proc/locks', encoding='ascii', errors='replace') as f:
      lines = f.read().splitlines()
  except OSError:
    return None
  wanted = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
  for line in lines:
    # e.g. "3: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
    fields = line.split()
    if len(fields) < 6 or fields[1] != 'FLOCK':
      continue
    try:
      major, minor, inode = fields[5].split(':')
      key = (int(major, 16), int(minor, 16), int(inode))
      pid = int(fields[4])
    except ValueError:
      continue
    if key == wanted:
      return pid
  return None

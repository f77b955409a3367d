"""Crash-safe file writes: a reader sees the old file or the new one, never half.

Write to a temporary file in the same directory, fsync it, rename it over the
target, then fsync the directory so that the rename itself survives a crash.
Used for every ledger, result file and plot whose partial write could lie
(`write_text_atomic`, `write_bytes_atomic`), and (through `publish`) for files
written in pieces, such as an imported table.
"""

import os
import tempfile
from typing import Optional


def fsync_directory(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def publish(tmp_path: str, path: str) -> None:
  """Makes a finished temporary file durable, then renames it over `path`.

  `tmp_path` must be in `path`'s directory (a rename across file systems is
  not atomic).
  """
  fd = os.open(tmp_path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
  os.replace(tmp_path, path)
  fsync_directory(os.path.dirname(os.path.abspath(path)))


def write_text_atomic(path: str, text: str) -> None:
  """Replaces `path` by `text` atomically (UTF-8)."""
  write_bytes_atomic(path, text.encode('utf-8'))


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Replaces `path` by `data` atomically."""
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory,
                             prefix=f'.{os.path.basename(path)}.',
                             suffix='.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  fsync_directory(directory)


def file_identity(path: str) -> Optional[tuple[int, int, int]]:
  """(inode, size, mtime_ns) of `path`, or None if it cannot be read: how a
  writer that extends a file in place tells whether someone else changed it."""
  try:
    st = os.stat(path)
  except OSError:
    return None
  return st.st_ino, st.st_size, st.st_mtime_ns

"""Reads one .npy array of a zip (.npz) archive in chunks of rows.

The member is parsed from the zip stream as it is read, never loaded whole,
so an .npz input takes memory bounded by the chunk size. Arrays that would
need pickle (dtype object) are refused, not loaded.
"""

import zipfile
import zlib

import numpy as np

from tff_dp.data import table_checks

# What zipfile raises for a damaged, encrypted or exotic member: a bad CRC, a
# broken deflate stream, a cut archive, an unsupported compression method, a
# password. None is a ValueError or OSError, which the import program reports
# as one line, so each is turned into a TableError naming the array.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
               RuntimeError)


class NpyStream:
  """Reads a .npy member of a zip file in chunks of rows."""

  def __init__(self, zf: zipfile.ZipFile, member: str, path: str, name: str):
    self.name = name
    self._path = path
    try:
      self._file = zf.open(member)
    except _ZIP_ERRORS as e:
      raise self._unreadable(e) from None
    try:
      self._read_header(path, name)
    except BaseException:
      self._file.close()  # Refused before the caller could close it.
      raise

  def _unreadable(self, error: BaseException) -> table_checks.TableError:
    return table_checks.TableError(
        self._path, f'array {self.name!r} cannot be read from the archive '
        f'({type(error).__name__}: {error})')

  def _read_header(self, path: str, name: str) -> None:
    """Reads and checks the .npy header; sets the array's shape and dtype."""
    try:
      version = np.lib.format.read_magic(self._file)
      if version == (1, 0):
        header = np.lib.format.read_array_header_1_0(self._file)
      elif version == (2, 0):
        header = np.lib.format.read_array_header_2_0(self._file)
      else:
        raise table_checks.TableError(
            path, f'array {name!r}: unsupported .npy format version '
            f'{version}')
    except _ZIP_ERRORS as e:
      raise self._unreadable(e) from None
    except ValueError as e:
      if isinstance(e, table_checks.TableError):
        raise
      raise table_checks.TableError(
          path, f'array {name!r}: not a valid .npy array ({e})') from None
    shape, fortran_order, dtype = header
    if dtype.hasobject:
      raise table_checks.TableError(
          path, f'array {name!r} has dtype object (needs pickle, which is '
          'not loaded); save strings as a fixed-width array, e.g. '
          'np.asarray(ids, dtype=str)')
    if not shape:
      raise table_checks.TableError(
          path, f'array {name!r} is a scalar; expected one entry per row')
    if fortran_order and len(shape) > 1:
      raise table_checks.TableError(
          path, f'array {name!r} is in Fortran order; save '
          'np.ascontiguousarray(array) instead')
    self.shape = shape
    self.dtype = dtype
    self.rows = shape[0]
    self.width = int(np.prod(shape[1:], dtype=np.int64))
    self._row_bytes = dtype.itemsize * self.width

  def read(self, rows: int) -> np.ndarray:
    """The next `rows` rows, as [rows] or [rows, width]."""
    wanted = rows * self._row_bytes
    try:
      buf = self._file.read(wanted)
    except _ZIP_ERRORS as e:
      raise self._unreadable(e) from None
    if len(buf) != wanted:
      raise table_checks.TableError(self._path,
                                    f'array {self.name!r} is truncated')
    array = np.frombuffer(buf, dtype=self.dtype)
    return array.reshape((rows,) if len(self.shape) == 1 else (rows,
                                                               self.width))

  def close(self) -> None:
    self._file.close()

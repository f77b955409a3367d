"""TFF's real federated benchmarks, loaded from a local cache directory.

The files are those TFF's loaders (`tff.simulation.datasets`) read from
their `cache_dir` (here `data_dir`), in TFF's format, but they are read by
`tff_cache`, not by TFF's `SqlClientData` (which pastes client ids into its
SQL: see `tff_cache` for why and for the checks that run on load):

* EMNIST (Cohen et al. 2017, "EMNIST: an extension of MNIST to handwritten
  letters", arXiv:1702.05373), grouped by writer as in LEAF (Caldas et al.
  2018, "LEAF: A Benchmark for Federated Settings", arXiv:1812.01097):
  digits only (3,383 writers, 10 classes) or digits and letters (3,400
  writers, 62 classes).
* Shakespeare (LEAF): lines of 715 characters of the plays, for
  next-character prediction.
* Stack Overflow (TFF's own; used in Reddi et al. 2021, "Adaptive Federated
  Optimization", ICLR): posts of 342,477 users, for next-word prediction and
  tag prediction. The test split returned is TFF's 'test' split (posts after
  2018-01-01); TFF's 'heldout' split is not returned.
* CIFAR-100 (Krizhevsky 2009) partitioned over 500 clients by the Pachinko
  Allocation Method (Li and McCallum 2006), as in Reddi et al. 2021.

Each of TFF's loaders downloads `<name>.sqlite.lzma` from TFF's public bucket
unless `<cache_dir>/<name>.sqlite` exists, which it then uses as it is. There
is no network at run time here, so `load_tff_dataset` looks first and, when
the file is missing, raises `MissingDatasetError` naming the file, the
directory and the URL. A downloaded `<name>.sqlite.lzma` placed in the
directory is decompressed in place. A file that is present but unusable
(not SQLite, truncated by an interrupted download or copy, without the
tables or splits the loader reads, or with content that fails the checks of
`tff_cache`) raises `CorruptDatasetError`, whose message starts with the
file: TFF's own downloader writes straight to the final name, so an
interrupted download leaves a truncated file that TFF would later take as
cached.

The checks on load read `client_metadata` and one example per split, never
the whole file. Measured on 2 cores shared with other jobs, on fake files
with the real files' `client_metadata` rows (and, for EMNIST, 112 real rows
per writer, 1.5 GB), against TFF's loader and the sizes read before: Stack
Overflow 2.8-3.3 s (342,477 + 204,088 clients checked) against 2.0-3.1 s;
EMNIST digits 0.25 s against 0.1 s. Reading 100 EMNIST clients of 100 rows,
or the 40,596-row test set, took the same time as through TFF's
`SqlClientData`, within the noise of the shared machine (about 30%).

The Stack Overflow vocabularies (word and tag counts) are Keras `get_file`
downloads, cached under `<data_dir>/datasets/` and checked against a SHA-256
in TFF's source; `load_stackoverflow_word_counts` and
`load_stackoverflow_tag_counts` check the file and its hash first for the
same reason.
"""

import collections
import dataclasses
import enum
import hashlib
import lzma
import os
import tempfile
from typing import Optional, Union

import tensorflow_federated as tff

from tff_dp.data import tff_cache
from tff_dp.data import tff_cache_formats
from tff_dp.data.tff_cache_split import CacheSplit

PathLike = Union[str, os.PathLike]

_BUCKET = 'https://storage.googleapis.com/tff-datasets-public/'
_CHUNK_BYTES = 1 << 20
_SQLITE_MAGIC = b'SQLite format 3\x00'


class TffDataset(enum.Enum):
  """The real federated benchmarks TFF ships loaders for."""
  EMNIST_DIGITS = 'emnist_digits'
  EMNIST_FULL = 'emnist_full'
  SHAKESPEARE = 'shakespeare'
  STACKOVERFLOW_WORD = 'stackoverflow_word'
  STACKOVERFLOW_TAG = 'stackoverflow_tag'
  CIFAR100 = 'cifar100'


class MissingDatasetError(FileNotFoundError):
  """A dataset file is not in the cache directory (and was not downloaded)."""


class CorruptDatasetError(ValueError):
  """A dataset file is in the cache directory but cannot be used."""


@dataclasses.dataclass(frozen=True)
class CacheFile:
  """A file a TFF loader looks for in its cache directory.

  Attributes:
    file_name: Name of the file the loader reads.
    url: Where TFF downloads it from.
    subdir: Directory inside data_dir ('' for data_dir itself).
    lzma: Whether `url` serves `file_name` + '.lzma' (TFF decompresses it
      while downloading).
    sha256: Hash TFF checks before using the file, if any.
  """
  file_name: str
  url: str
  subdir: str = ''
  lzma: bool = False
  sha256: Optional[str] = None

  def directory(self, data_dir: str) -> str:
    return os.path.join(data_dir, self.subdir) if self.subdir else data_dir

  def path(self, data_dir: str) -> str:
    return os.path.join(self.directory(data_dir), self.file_name)


def _database(name: str) -> CacheFile:
  return CacheFile(file_name=f'{name}.sqlite',
                   url=f'{_BUCKET}{name}.sqlite.lzma',
                   lzma=True)


_EMNIST = _database('emnist_all')
_SHAKESPEARE = _database('shakespeare')
_STACKOVERFLOW = _database('stackoverflow')
_CIFAR100 = _database('cifar100')
# Keras get_file caches under <cache_dir>/datasets; the hashes are the ones
# in tff.simulation.datasets.stackoverflow (a test keeps them in sync).
STACKOVERFLOW_WORD_COUNTS = CacheFile(
    file_name='stackoverflow.word_count.tar.bz2',
    url=f'{_BUCKET}stackoverflow.word_count.tar.bz2',
    subdir='datasets',
    sha256='1dc00256d6e527c54b9756d968118378ae14e6692c0b3b6cad470cdd3f0c519c')
STACKOVERFLOW_TAG_COUNTS = CacheFile(
    file_name='stackoverflow.tag_count.tar.bz2',
    url=f'{_BUCKET}stackoverflow.tag_count.tar.bz2',
    subdir='datasets',
    sha256='6fe281cec490d9384a290d560072438e7e2b377bbb823876ce7bd6f82696772d')


@dataclasses.dataclass(frozen=True)
class _Spec:
  title: str
  database: CacheFile
  # Every split name TFF's loader opens (it fails on an empty one); the
  # first is the training split, the last the test split.
  splits: tuple[str, ...]
  example_format: tff_cache_formats.ExampleFormat
  vocabularies: tuple[CacheFile, ...] = ()


_SO_SPLITS = ('train', 'heldout', 'test')
_SPECS = {
    TffDataset.EMNIST_DIGITS:
        _Spec('EMNIST (digits only)', _EMNIST,
              ('digits_only_train', 'digits_only_test'),
              tff_cache_formats.emnist_format(10)),
    TffDataset.EMNIST_FULL:
        _Spec('EMNIST (digits and letters)', _EMNIST, ('all_train', 'all_test'),
              tff_cache_formats.emnist_format(62)),
    TffDataset.SHAKESPEARE:
        _Spec('Shakespeare', _SHAKESPEARE, ('train', 'test'),
              tff_cache_formats.SHAKESPEARE_FORMAT),
    TffDataset.STACKOVERFLOW_WORD:
        _Spec('Stack Overflow (next word)', _STACKOVERFLOW, _SO_SPLITS,
              tff_cache_formats.STACKOVERFLOW_FORMAT,
              (STACKOVERFLOW_WORD_COUNTS,)),
    TffDataset.STACKOVERFLOW_TAG:
        _Spec('Stack Overflow (tag prediction)', _STACKOVERFLOW, _SO_SPLITS,
              tff_cache_formats.STACKOVERFLOW_FORMAT,
              (STACKOVERFLOW_WORD_COUNTS, STACKOVERFLOW_TAG_COUNTS)),
    TffDataset.CIFAR100:
        _Spec('CIFAR-100', _CIFAR100, ('train', 'test'),
              tff_cache_formats.CIFAR100_FORMAT),
}


def cache_files(kind: TffDataset) -> tuple[CacheFile, ...]:
  """Every file the benchmark needs: its database, then its vocabularies.

  `load_tff_dataset` needs only the first; the Stack Overflow tasks also
  need the word (and for tags the tag) counts to build their vocabularies.

  Args:
    kind: Which benchmark.
  """
  spec = _SPECS[TffDataset(kind)]
  return (spec.database,) + spec.vocabularies


def split_names(kind: TffDataset) -> tuple[str, ...]:
  """The split names TFF's loader reads from the database (train first)."""
  return _SPECS[TffDataset(kind)].splits


def _how_to_get(file: CacheFile, data_dir: str) -> str:
  directory = file.directory(data_dir)
  if file.lzma:
    return (f'download {file.url} on a machine with network access and copy '
            f'it into {directory} either as it is ({file.file_name}.lzma: '
            'tff-dp decompresses it on first use) or decompressed (`xz -d '
            f'{file.file_name}.lzma` gives {file.file_name})')
  return (f'download {file.url} on a machine with network access and copy '
          f'it into {directory} as it is (sha256 {file.sha256})')


def _missing_message(title: str, file: CacheFile, data_dir: str) -> str:
  return (f'{title}: missing from the data directory: put {file.file_name} in '
          f'{file.directory(data_dir)} (that is, {file.path(data_dir)}). '
          'tff-dp does not download datasets unless asked to (there may be '
          f'no network). To get the file, {_how_to_get(file, data_dir)}.')


def _corrupt(title: str, file: CacheFile, data_dir: str, path: str,
             reason: str) -> CorruptDatasetError:
  return CorruptDatasetError(
      f'{path}: {reason}: not a usable copy of {file.file_name} ({title}). '
      f'Delete it and copy it again: {_how_to_get(file, data_dir)}.')


def _decompress(lzma_path: str, path: str, raise_corrupt) -> None:
  """Decompresses lzma_path to path through a temporary file."""
  fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(path),
                                  prefix=f'.{os.path.basename(path)}.',
                                  suffix='.tmp')
  try:
    decompressor = lzma.LZMADecompressor()
    with open(lzma_path, 'rb') as src, os.fdopen(fd, 'wb') as dst:
      while chunk := src.read(_CHUNK_BYTES):
        if decompressor.eof:
          raise lzma.LZMAError('trailing data after the compressed stream')
        dst.write(decompressor.decompress(chunk))
      if decompressor.unused_data:
        raise lzma.LZMAError('trailing data after the compressed stream')
      if not decompressor.eof:
        raise lzma.LZMAError('the file ends before the end of the '
                             'compressed stream (truncated)')
    os.replace(tmp_path, path)
  except lzma.LZMAError as e:
    raise_corrupt(lzma_path, f'cannot decompress it: {e}')
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)


def _sqlite_size_problem(path: str) -> Optional[str]:
  """Why `path` is not a complete SQLite file, judged from its header."""
  size = os.path.getsize(path)
  with open(path, 'rb') as f:
    header = f.read(100)
  if len(header) < 100 or header[:16] != _SQLITE_MAGIC:
    return f'not an SQLite database, {size} bytes'
  page_size = int.from_bytes(header[16:18], 'big')
  page_size = 65536 if page_size == 1 else page_size
  pages = int.from_bytes(header[28:32], 'big')
  # The in-header page count is valid when the change counter equals the
  # version-valid-for number (SQLite file format, section 1.3.7).
  if pages and header[24:28] == header[92:96]:
    expected = page_size * pages
    if size < expected:
      return (f'truncated: {size} bytes, the SQLite header says {expected}; '
              'an interrupted download or copy?')
  return None


def _open(spec: _Spec, path: str,
          raise_corrupt) -> tuple[CacheSplit, CacheSplit]:
  problem = _sqlite_size_problem(path)
  if problem:
    raise_corrupt(path, problem)
  try:
    train, test = tff_cache.open_cache(path,
                                       example_format=spec.example_format,
                                       splits=(spec.splits[0], spec.splits[-1]),
                                       required=spec.splits)
  except tff_cache.CacheFormatError as e:
    raise_corrupt(path, e.reason)
  return train, test


def load_tff_dataset(
    kind: TffDataset,
    *,
    data_dir: PathLike,
    allow_download: bool = False) -> tuple[CacheSplit, CacheSplit]:
  """Checks a benchmark's cache file and opens its (train, test) splits.

  Args:
    kind: Which benchmark. The two EMNIST kinds share one file, as do the
      two Stack Overflow kinds (which return the same splits; their tasks
      differ in the vocabularies, see `cache_files`).
    data_dir: The cache directory (TFF's `cache_dir`).
    allow_download: If the file is missing, let TFF's downloader fetch it
      (1.7 GB for EMNIST, tens of GB for Stack Overflow) instead of raising.

  Returns:
    (train, test) `tff_cache_split.CacheSplit`s, whose elements are those of
    TFF's loader (e.g. EMNIST: OrderedDict(label int32, pixels float32
    [28, 28])).

  Raises:
    MissingDatasetError: The file is not in `data_dir` (or the download
      failed); the message names the file, directory and URL.
    CorruptDatasetError: The file is there but unusable; the message starts
      with its path.
  """
  kind = TffDataset(kind)
  spec = _SPECS[kind]
  data_dir = os.fspath(data_dir)
  file = spec.database
  path = file.path(data_dir)

  def raise_corrupt(bad_path: str, reason: str):
    raise _corrupt(spec.title, file, data_dir, bad_path, reason)

  if not os.path.isfile(path):
    if os.path.isfile(path + '.lzma'):
      _decompress(path + '.lzma', path, raise_corrupt)
    elif allow_download:
      _download(spec, data_dir)
    else:
      raise MissingDatasetError(_missing_message(spec.title, file, data_dir))
  return _open(spec, path, raise_corrupt)


def _download(spec: _Spec, data_dir: str) -> None:
  file = spec.database
  path = file.path(data_dir)
  try:
    tff.simulation.datasets.download.get_compressed_file(origin=file.url,
                                                         cache_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    # TFF writes the download straight to `path`: never leave a partial
    # file that a later call would take as cached.
    if os.path.exists(path):
      os.remove(path)
    raise MissingDatasetError(
        f'{_missing_message(spec.title, file, data_dir)} (the download '
        f'failed: {type(e).__name__}: {e})') from e


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    while chunk := f.read(_CHUNK_BYTES):
      digest.update(chunk)
  return digest.hexdigest()


def _check_vocabulary(file: CacheFile, data_dir: str, title: str) -> None:
  path = file.path(data_dir)
  if not os.path.isfile(path):
    raise MissingDatasetError(_missing_message(title, file, data_dir))
  # Keras silently moves its cache to /tmp/.keras when the directory is not
  # writable (and it extracts the archive on every call).
  if not os.access(file.directory(data_dir), os.W_OK):
    raise CorruptDatasetError(
        f'{title}: {file.directory(data_dir)} must be writable: Keras '
        f'extracts {file.file_name} there')
  # Keras would try to download again on a mismatch, failing offline with a
  # message that does not say which file is wrong.
  actual = _sha256(path)
  if actual != file.sha256:
    raise _corrupt(title, file, data_dir, path,
                   f'sha256 {actual}, expected {file.sha256}')


def load_stackoverflow_word_counts(
    *,
    data_dir: PathLike,
    vocab_size: Optional[int] = None) -> collections.OrderedDict[str, int]:
  """TFF's Stack Overflow word counts, most frequent first.

  Args:
    data_dir: The cache directory; the archive is read from
      `<data_dir>/datasets/stackoverflow.word_count.tar.bz2`.
    vocab_size: Keep only the first `vocab_size` words.

  Raises:
    MissingDatasetError: The archive is missing.
    CorruptDatasetError: Its hash is wrong or the directory not writable.
  """
  data_dir = os.fspath(data_dir)
  _check_vocabulary(STACKOVERFLOW_WORD_COUNTS, data_dir,
                    'Stack Overflow word counts')
  return tff.simulation.datasets.stackoverflow.load_word_counts(
      cache_dir=data_dir, vocab_size=vocab_size)


def load_stackoverflow_tag_counts(
    *, data_dir: PathLike) -> collections.OrderedDict[str, int]:
  """TFF's Stack Overflow tag counts, most frequent first.

  Args:
    data_dir: The cache directory; the archive is read from
      `<data_dir>/datasets/stackoverflow.tag_count.tar.bz2`.

  Raises:
    MissingDatasetError: The archive is missing.
    CorruptDatasetError: Its hash is wrong or the directory not writable.
  """
  data_dir = os.fspath(data_dir)
  _check_vocabulary(STACKOVERFLOW_TAG_COUNTS, data_dir,
                    'Stack Overflow tag counts')
  return tff.simulation.datasets.stackoverflow.load_tag_counts(
      cache_dir=data_dir)


def title(kind: TffDataset) -> str:
  """A human-readable name of the benchmark, e.g. 'EMNIST (digits only)'."""
  return _SPECS[TffDataset(kind)].title

"""The running Python's standard library as federated code-completion data.

Real text that ships with every machine that runs the project, with a
natural client structure: each module file of the standard library of the
running interpreter (`sysconfig.get_paths()['stdlib']`) is one client, whose
text is its source and docstrings, and the task is predicting the next
character of code (`--dataset=python_stdlib`; the character-level framing of
federated Shakespeare, McMahan et al. 2017, "Communication-Efficient Learning
of Deep Networks from Decentralized Data", AISTATS, on code).

Which files: every `*.py` file under the library directory, by relative path
in sorted order, except test code (any directory named `test`, `tests` or
`idle_test`), installed packages (`site-packages`, `dist-packages`), caches,
files over 200 KB (generated tables such as `pydoc_data/topics.py`) and
files under 512 bytes (mostly empty `__init__.py`).

Tokens: bytes. The 95 printable ASCII characters and the newline are ids
1..96 (`token_sources.TokenVocabulary`, as TFF's baselines number tokens),
any other byte (tabs, carriage returns, UTF-8 of non-ASCII text) is oov 97,
and bos 98 / eos 99 frame a file: 100 ids, 0 the padding. A file's ids
[bos, bytes..., eos] are cut into non-overlapping windows of 65 ids from its
start (the last left-padded with 0, `token_sources.token_windows`), whose
first 64 are the features; the label is the 65th (the rnn) or the next id
at each of the 64 positions (the transformer,
`registry.LoadRequest.next_token_labels`). A client keeps at most 64 windows,
evenly spaced through its file (so that long modules are not only their
license header and imports); public clients keep up to 256 (central
pretraining may use more of them).

The split is BY CLIENT and depends on the file's relative path only: with
h = the first 8 hex digits of SHA-256 of the path (e.g. 'json/decoder.py')
as an integer, h mod 20 in {0, 1} makes the module PUBLIC (about 10%: it
never joins the private population, is never sampled, never in the test set;
`./run.sh pretrain` trains on these), {2, 3} a TEST client (about 10%: held
out of the population; the server's test set is its windows, at most 16 per
module), and anything else a private training client (the population N of
the accounting). The rule needs no list and no other file, so a module
added by a later Python version cannot move another one across the split.

What may be released: the whole standard library is published source, like
the published test splits of TFF's benchmarks, so evaluation on the test
modules is released as on a published test split (`TestSetOrigin.
PUBLISHED_TEST_SPLIT`); in a deployment, where the clients' text is private,
evaluate on data you could publish. Determinism: the same Python version
(e.g. 3.11.7) built from the same sources gives the same clients, windows
and split; the data's fingerprint (SHA-256 over the paths and the windows)
is recorded with every checkpoint, so a resume on other text is refused.
Loading reads the kept files (Python 3.11.7: 683 of them, 11 MB).
"""

import hashlib
import os
import sys
import sysconfig
from typing import Any, Optional

import numpy as np
import tensorflow as tf

from tff_dp.data import benchmark_source
from tff_dp.data import registry
from tff_dp.data import token_sources
from tff_dp.data.labels import LabelKind

WINDOW = 64
VOCABULARY = token_sources.TokenVocabulary(
    tuple(chr(c) for c in range(32, 127)) + ('\n',))
MAX_WINDOWS_PER_CLIENT = 64
MAX_WINDOWS_PER_PUBLIC_CLIENT = 256
MAX_TEST_WINDOWS_PER_CLIENT = 16
MIN_FILE_BYTES = 512
MAX_FILE_BYTES = 200_000
_SKIPPED_DIRS = frozenset({
    'test', 'tests', 'idle_test', 'site-packages', 'dist-packages',
    '__pycache__'
})
# h mod _BUCKETS: the public and the test buckets; the rest is private.
_BUCKETS = 20
_PUBLIC_BUCKETS = frozenset({0, 1})
_TEST_BUCKETS = frozenset({2, 3})
_BYTE_IDS = token_sources.byte_ids(VOCABULARY)

PUBLIC_RULE = ('the modules whose path hashes to bucket 0 or 1 of 20 '
               '(SHA-256 of the relative path, first 8 hex digits, mod 20)')


def stdlib_dir() -> str:
  """The running interpreter's standard library directory."""
  return sysconfig.get_paths()['stdlib']


def module_paths(root: str) -> list[str]:
  """Relative '/'-separated paths of the usable module files, sorted."""
  paths = []
  for directory, subdirs, files in os.walk(root):
    subdirs[:] = sorted(d for d in subdirs if d not in _SKIPPED_DIRS)
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(directory, name)
      if MIN_FILE_BYTES <= os.path.getsize(path) <= MAX_FILE_BYTES:
        paths.append(os.path.relpath(path, root).replace(os.sep, '/'))
  return sorted(paths)


def split_of(path: str) -> str:
  """'public', 'test' or 'private': the module's side of the split."""
  bucket = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % _BUCKETS
  if bucket in _PUBLIC_BUCKETS:
    return 'public'
  return 'test' if bucket in _TEST_BUCKETS else 'private'


def file_windows(text: bytes, max_windows: int) -> np.ndarray:
  """A file's windows of WINDOW + 1 ids, int32 [n, WINDOW + 1] (docstring).

  Args:
    text: The file's bytes.
    max_windows: Keep at most this many, evenly spaced.
  """
  ids = np.concatenate([[VOCABULARY.bos],
                        _BYTE_IDS[np.frombuffer(text, np.uint8)],
                        [VOCABULARY.eos]]).astype(np.int32)
  length = WINDOW + 1
  # Cut from the start; the short last window is padded on the left.
  full, rest = divmod(len(ids), length)
  windows = ids[:full * length].reshape(full, length)
  if rest:
    last = np.concatenate([np.zeros(length - rest, np.int32), ids[-rest:]])
    windows = np.concatenate([windows, last[np.newaxis]])
  if len(windows) > max_windows:
    keep = np.unique(
        np.linspace(0,
                    len(windows) - 1, max_windows).round().astype(int))
    windows = windows[keep]
  return windows


def _features_labels(windows: np.ndarray,
                     next_token_labels: bool) -> tuple[np.ndarray, np.ndarray]:
  x = windows[:, :WINDOW].astype(np.float32)
  y = windows[:, 1:] if next_token_labels else windows[:, WINDOW]
  return x, np.ascontiguousarray(y, dtype=np.int32)


class PythonStdlibSource(benchmark_source.CachedClients):
  """The standard library's modules as clients (module docstring).

  Offers what training needs from a streamed source (`population`,
  `input_dim`, `num_classes`, `image_shape`, `vocab_size`, `label_kind`,
  `client_sizes()`, `client_dataset(i)`, `test_dataset()`, `fingerprint()`,
  the banner), and the public clients for central pretraining
  (`public_client_ids`, `public_examples()`).
  """

  image_shape = None
  public_rule = PUBLIC_RULE

  def __init__(self,
               root: Optional[str] = None,
               *,
               next_token_labels: bool = False):
    """Reads the library's modules and splits them (module docstring).

    Args:
      root: The library directory; None: the running interpreter's.
      next_token_labels: Label every position (the transformer's labels).

    Raises:
      ValueError: If the directory holds no usable module of some side of
        the split.
    """
    self.name = 'python_stdlib'
    self.root = stdlib_dir() if root is None else root
    self.input_dim = WINDOW
    self.num_classes = self.vocab_size = VOCABULARY.size
    self.label_kind = (LabelKind.NEXT_TOKENS
                       if next_token_labels else LabelKind.SINGLE)
    self._next_token_labels = next_token_labels
    caps = {
        'public': MAX_WINDOWS_PER_PUBLIC_CLIENT,
        'test': MAX_TEST_WINDOWS_PER_CLIENT,
        'private': MAX_WINDOWS_PER_CLIENT
    }
    sides = {side: ([], []) for side in caps}
    digest = hashlib.sha256(b'tff-dp python_stdlib v1\n')
    for path in module_paths(self.root):
      side = split_of(path)
      with open(os.path.join(self.root, path), 'rb') as f:
        windows = file_windows(f.read(), caps[side])
      sides[side][0].append(path)
      sides[side][1].append(windows)
      digest.update(f'{path}\n{side}\n{windows.shape}\n'.encode())
      digest.update(windows.tobytes())
    for side, (paths, _) in sides.items():
      if not paths:
        raise ValueError(f'{self.root}: no {side} module of the standard '
                         'library (is this a Python installation?)')
    self._fingerprint = 'sha256:' + digest.hexdigest()
    self.client_ids, self._windows = sides['private']
    self.public_client_ids, self._public = sides['public']
    self.test_client_ids, self._test = sides['test']
    self._sizes = np.array([len(w) for w in self._windows], np.int64)

  def fingerprint(self) -> str:
    """SHA-256 over every module's path, side and windows."""
    return self._fingerprint

  def client_arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows of private client `index` as (features, labels) arrays
    (`token_memory` reads them without a dataset)."""
    return _features_labels(self._windows[int(index)], self._next_token_labels)

  def test_arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """The test modules' windows as (features, labels) arrays."""
    return _features_labels(np.concatenate(self._test), self._next_token_labels)

  def client_dataset(self, index: int) -> tf.data.Dataset:
    """The windows of private client `index` (unbatched): (features, label)."""
    return tf.data.Dataset.from_tensor_slices(self.client_arrays(index))

  def test_dataset(self) -> tf.data.Dataset:
    """The test modules' windows (server-side evaluation only)."""
    return tf.data.Dataset.from_tensor_slices(self.test_arrays())

  def public_examples(self) -> tuple[np.ndarray, np.ndarray]:
    """The public modules' windows as (features, labels) arrays."""
    return _features_labels(np.concatenate(self._public),
                            self._next_token_labels)

  def describe(self) -> str:
    s = self.statistics()
    public = sum(len(w) for w in self._public)
    test = sum(len(w) for w in self._test)
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} clients "
        '(the population N for privacy accounting)',
        f'  the standard library of Python {sys.version.split()[0]} at '
        f'{self.root}, one client per module file',
        f"  train windows: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f'  features: the {WINDOW} byte ids before the label (vocabulary of '
        f'{self.vocab_size} ids: {len(VOCABULARY.tokens)} characters + pad, '
        f'oov, bos, eos), '
        f'{token_sources.labels_phrase(WINDOW, self._next_token_labels)}',
        f'  public (never in the population; ./run.sh pretrain): '
        f'{len(self.public_client_ids)} modules, {public} windows',
        f'  test: {len(self.test_client_ids)} held-out modules, {test} '
        'windows (server-side evaluation only)',
    ])


def load(request: registry.LoadRequest) -> Any:
  """`--dataset=python_stdlib` (a row of `tff_dp.data.registry`)."""
  return PythonStdlibSource(next_token_labels=request.next_token_labels)

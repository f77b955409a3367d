"""`--dataset=python_stdlib`: the standard library's modules as clients.

On a small fake library (exact checks of the files kept, the windows and the
labels) and on the running interpreter's own (determinism, the split).
"""

import hashlib
import os

import numpy as np
import pytest

from tff_dp.data import python_stdlib
from tff_dp.data import registry
from tff_dp.data.labels import LabelKind


@pytest.fixture(scope='module')
def stdlib():
  return python_stdlib.PythonStdlibSource(next_token_labels=True)


def _write(root, path, text):
  full = os.path.join(root, *path.split('/'))
  os.makedirs(os.path.dirname(full), exist_ok=True)
  with open(full, 'wb') as f:
    f.write(text)


def test_module_files_skip_tests_caches_and_odd_sizes(tmp_path):
  body = b'x = 1\n' * 100
  for path in ('a.py', 'pkg/b.py', 'test/c.py', 'pkg/tests/d.py',
               'idlelib/idle_test/e.py', 'site-packages/f.py',
               '__pycache__/g.py', 'notes.txt'):
    _write(tmp_path, path, body)
  _write(tmp_path, 'tiny.py', b'x = 1\n')
  _write(tmp_path, 'huge.py', b'#' * (python_stdlib.MAX_FILE_BYTES + 1))
  assert python_stdlib.module_paths(str(tmp_path)) == ['a.py', 'pkg/b.py']


def test_windows_are_the_framed_bytes_cut_from_the_start():
  text = b'def f():\n\treturn "\xc3\xa9"\n' * 5
  windows = python_stdlib.file_windows(text, max_windows=100)
  vocab = python_stdlib.VOCABULARY
  expected = [vocab.bos]
  for byte in text:
    char = chr(byte)
    expected.append(
        vocab.tokens.index(char) + 1 if char in vocab.tokens else vocab.oov)
  expected.append(vocab.eos)
  length = python_stdlib.WINDOW + 1
  assert windows.shape == (-(-len(expected) // length), length)
  # The last window is left-padded with 0; removing the padding gives the
  # stream back.
  stream = np.concatenate([windows[:-1].ravel(), windows[-1][windows[-1] > 0]])
  np.testing.assert_array_equal(stream, expected)
  assert windows[-1][0] == 0


def test_long_files_keep_evenly_spaced_windows():
  text = bytes(range(32, 127)) * 200
  everything = python_stdlib.file_windows(text, max_windows=10_000)
  kept = python_stdlib.file_windows(text, max_windows=5)
  assert len(kept) == 5
  np.testing.assert_array_equal(kept[0], everything[0])
  np.testing.assert_array_equal(kept[-1], everything[-1])


def test_split_follows_the_documented_hash_rule():
  for path in ('json/decoder.py', 'os.py', 'asyncio/tasks.py', 'x/y.py'):
    bucket = int(hashlib.sha256(path.encode()).hexdigest()[:8], 16) % 20
    expected = ('public' if bucket < 2 else 'test' if bucket < 4 else 'private')
    assert python_stdlib.split_of(path) == expected


def test_public_test_and_private_modules_are_disjoint_and_complete(stdlib):
  public = set(stdlib.public_client_ids)
  test = set(stdlib.test_client_ids)
  private = set(stdlib.client_ids)
  assert public and test and private
  assert not (public & test or public & private or test & private)
  assert public | test | private == set(python_stdlib.module_paths(stdlib.root))
  assert stdlib.population == len(private)
  assert all(python_stdlib.split_of(p) == 'public' for p in public)


def test_loading_is_deterministic(stdlib):
  again = python_stdlib.PythonStdlibSource(next_token_labels=True)
  assert again.fingerprint() == stdlib.fingerprint()
  assert again.client_ids == stdlib.client_ids
  np.testing.assert_array_equal(again.client_sizes(), stdlib.client_sizes())
  x, y = next(iter(stdlib.client_dataset(7).batch(1000)))
  x2, y2 = next(iter(again.client_dataset(7).batch(1000)))
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)


def test_next_token_labels_are_the_window_shifted_by_one(stdlib):
  assert stdlib.label_kind is LabelKind.NEXT_TOKENS
  x, y = next(iter(stdlib.client_dataset(0).batch(1000)))
  x, y = x.numpy(), y.numpy()
  assert x.shape[1] == y.shape[1] == python_stdlib.WINDOW
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
  assert (stdlib.client_sizes() <= python_stdlib.MAX_WINDOWS_PER_CLIENT).all()


def test_the_rnn_gets_one_label_per_window(tmp_path):
  for i in range(60):  # Enough modules for every side of the split.
    _write(tmp_path, f'm{i}.py', f'value_{i} = {i}\n'.encode() * 80)
  source = python_stdlib.PythonStdlibSource(str(tmp_path))
  assert source.label_kind is LabelKind.SINGLE
  x, y = next(iter(source.client_dataset(0).batch(1000)))
  assert y.shape == (x.shape[0],)
  public_x, public_y = source.public_examples()
  assert public_y.shape == (len(public_x),)


def test_registry_row_is_token_data_with_a_published_test_split():
  spec = registry.spec('python_stdlib')
  assert spec.tokens and spec.test_set.public

"""Helpers shared by the test modules (no tests here).

Test modules import these, never each other. Besides this module:

* `programs`: `run_train` and `start_train`, the one way tests run
  `python -m tff_dp.cli.train` in a subprocess.
* `benchmark_presets`: loading TFF's benchmark datasets as the program does,
  and running their presets (without a cache, one round on a fake one).
* `workers`: finding the TFF workers a run started, and waiting for them.
* `fake_tff_caches`: TFF's benchmark cache format (SQLite of
  tf.train.Example rows) and fake EMNIST and CIFAR-100 examples;
  `fake_shakespeare` and `fake_stackoverflow`: fake caches of those datasets
  built on it, and reference values computed without tff-dp.
* `configs_smoke`: trains every config of configs/ for two rounds (also run
  as a script) and checks what each run claims.
* `gaussian_canaries`: canary audits of a simulated Gaussian mechanism
  (exact in distribution, without d-dimensional vectors) and its analytic
  epsilon, for tests/audit/.
* `client_data_files`: --client_data files made by the real importer from
  (client, features, label) rows.
* `hostile_sqlite`: how an adversary edits a SQLite data file (hostile and
  refused client ids, raw SQL), for the tests of every reader of one.
* `fresh_imports`: which of TensorFlow and TFF a fresh interpreter imports
  along with some modules (the layers that must not).
* `grouped`: a tiny population and the runners that compare a grouped
  process with TFF's one-client-per-call reference (tests/algorithms/
  test_grouped_*.py).
* `central_dp`: DpSettings with the program's adaptive-clipping defaults,
  for the tests that build the DP aggregator.
* `ledgers`: central privacy ledgers of one round event over rounds 1..N;
  `json_edits`: a ledger's (or any) JSON with one field changed, JSON files
  rewritten in place, a checkpoint's manifest matched to an edited file.

This module:

* What an adversary holds: every file of a run directory except
  `checkpoints/` (the privacy statement says to keep that private), and the
  ways a secret integer could be written into them.
"""

import glob
import json
import os
from typing import Iterable

import numpy as np

# tests/helpers/__init__.py -> the repository root.
REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PRIVATE_DIRS = ('checkpoints',)


def released_files(run_dir: str) -> list[str]:
  """Every file of `run_dir` a user may publish (all but checkpoints/)."""
  found = []
  for root, dirs, files in os.walk(run_dir):
    dirs[:] = [d for d in dirs if not (root == run_dir and d in PRIVATE_DIRS)]
    found += [os.path.join(root, name) for name in files]
  return sorted(found)


def encodings(value: int) -> list[bytes]:
  """Byte strings a file would contain if it held the integer `value`.

  Decimal and hex text of the value, of its 64-bit halves (signed and
  unsigned, as int64 state leaves hold them), and the raw little-endian
  bytes of each half (as a binary event file would).
  """
  halves = [value & (2**64 - 1), value >> 64] if value >= 2**64 else [value]
  # Short numbers appear in any file by chance; only long ones identify.
  texts = {str(value), format(value, 'x')} if value >= 10**9 else set()
  raw = set()
  for half in halves:
    signed = half - 2**64 if half >= 2**63 else half
    for number in (half, signed):
      if abs(number) >= 10**9:
        texts.update({str(number), format(number & (2**64 - 1), 'x')})
    if half >= 2**32:
      raw.add(half.to_bytes(8, 'little'))
  return sorted({t.encode() for t in texts} | raw)


def files_containing(paths: Iterable[str], value: int) -> list[str]:
  """The files among `paths` that contain an encoding of `value`."""
  patterns = encodings(value)
  hits = []
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    if any(p in data for p in patterns):
      hits.append(path)
  return hits


def latest_checkpoint(run_dir: str) -> str:
  """Path of the newest checkpoint directory of a run."""
  paths = sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))
  assert paths, f'no checkpoint in {run_dir}'
  return paths[-1]


def checkpoint_secret(run_dir: str) -> int:
  """The sampling secret the newest checkpoint of a run holds."""
  with open(os.path.join(latest_checkpoint(run_dir), 'meta.json')) as f:
    return int(json.load(f)['secrets']['sampling'], 16)


def checkpoint_seed_pairs(run_dir: str) -> list[int]:
  """Values of the newest checkpoint's [2] int64 state leaves (seeds, such
  as DP-FTRL's tree noise seed), as unsigned 128-bit integers."""
  with np.load(os.path.join(latest_checkpoint(run_dir), 'state.npz'),
               allow_pickle=False) as state:
    pairs = [
        state[name]
        for name in state.files
        if state[name].dtype == np.int64 and state[name].shape == (2,)
    ]
  return [int(p[0]) % 2**64 + (int(p[1]) % 2**64 << 64) for p in pairs]

"""Atomic, checksummed checkpoints of a run, without pickle.

A checkpoint is a directory `checkpoints/round_<r>/` holding
  state.npz      the learning state's leaves (`tf.nest.flatten` order), saved
                 with numpy and loaded with `allow_pickle=False`;
  meta.json      round, format version, the run's resolved configuration, the
                 privacy ledger(s) and the values released for round r;
  MANIFEST.json  sha256 and size of the two files above.
A ledger that knows its rounds as lines (the central one) is not copied into
each meta.json but appended to `checkpoints/ledger-<name>.jsonl`, which
meta.json refers to by length and hash (format 2,
`tff_dp.program.ledger_journal`): what a round writes stays the same size.
Loading puts it back, so readers see format 1's meta.
It is written into a temporary directory, fsync'ed, and renamed into place, so
a crash leaves either a complete checkpoint or a stray temporary directory that
is never loaded. Loading verifies the manifest, the JSON, and every leaf's
dtype and shape against the process's own initial state, and falls back to an
older checkpoint (with a warning) when the newest one fails any check.

Why not `tff.program.FileProgramStateManager`: it writes a SavedModel per
version (measured here: ~0.4 s to save and ~0.9 s to load the main job's
state, against a ~0.7 s round), and has no integrity check; this format takes
milliseconds and detects truncated files, flipped bytes and missing files.
"""

import dataclasses
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from typing import Any, Optional

import numpy as np

from tff_dp import atomic_io
from tff_dp.program import faults
from tff_dp.program import ledger_journal

# 2: journaled ledgers (module docstring); 1 (ledgers inline) is still read.
FORMAT_VERSION = 2
_READ_VERSIONS = (1, 2)
_DIR_PATTERN = re.compile(r'^round_(\d{8})$')
_FILES = ('state.npz', 'meta.json')


class CheckpointError(Exception):
  """A checkpoint is missing, corrupt, or does not fit the process."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  round_num: int
  state: Any
  meta: dict[str, Any]
  path: str


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _write_file(path: str, data: bytes) -> None:
  with open(path, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def meta_json(meta: dict[str, Any]) -> str:
  """meta.json's text: one line (`indent` selects json's pure-Python
  encoder), NaN allowed (released values may be NaN)."""
  return json.dumps(meta, allow_nan=True)


class CheckpointManager:
  """Saves and restores the checkpoints of one run directory."""

  def __init__(self, run_dir: str, *, keep: int = 3):
    self.directory = os.path.join(run_dir, 'checkpoints')
    self._keep = keep
    self._journals = ledger_journal.LedgerJournals(self.directory)

  def path(self, round_num: int) -> str:
    """The directory of round `round_num`'s checkpoint."""
    return os.path.join(self.directory, f'round_{round_num:08d}')

  def rounds(self) -> list[int]:
    """Rounds with a checkpoint directory (valid or not), oldest first."""
    if not os.path.isdir(self.directory):
      return []
    found = []
    for name in os.listdir(self.directory):
      match = _DIR_PATTERN.match(name)
      if match:
        found.append(int(match.group(1)))
    return sorted(found)

  def save(self, round_num: int, state: Any, meta: dict[str, Any]) -> str:
    """Writes the checkpoint of `round_num` atomically; returns its path."""
    os.makedirs(self.directory, exist_ok=True)
    final = self.path(round_num)
    if os.path.exists(final):
      raise CheckpointError(f'checkpoint {final} already exists')
    tmp = tempfile.mkdtemp(dir=self.directory,
                           prefix=f'.round_{round_num:08d}.tmp-')
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      leaves = [np.asarray(leaf) for leaf in tf.nest.flatten(state)]
      buffer = io.BytesIO()
      np.savez(buffer, *leaves)
      _write_file(os.path.join(tmp, 'state.npz'), buffer.getvalue())
      faults.crash_point('checkpoint_write', round_num)
      meta = dict(meta, round=round_num, format_version=FORMAT_VERSION)
      if isinstance(meta.get('ledgers'), dict):
        # Appended (and fsync'ed) before the meta that refers to them.
        meta['ledgers'] = self._journals.record(meta['ledgers'])
      _write_file(os.path.join(tmp, 'meta.json'), meta_json(meta).encode())
      manifest = {
          name: {
              'sha256': _sha256(os.path.join(tmp, name)),
              'bytes': os.path.getsize(os.path.join(tmp, name))
          } for name in _FILES
      }
      _write_file(os.path.join(tmp, 'MANIFEST.json'),
                  json.dumps(manifest, indent=1).encode())
      atomic_io.fsync_directory(tmp)
      os.rename(tmp, final)
      atomic_io.fsync_directory(self.directory)
    except BaseException:
      shutil.rmtree(tmp, ignore_errors=True)
      raise
    self._prune(keep_latest=round_num)
    return final

  def _prune(self, *, keep_latest: int) -> None:
    old = [r for r in self.rounds() if r < keep_latest]
    for round_num in old[:max(0, len(old) - (self._keep - 1))]:
      shutil.rmtree(self.path(round_num), ignore_errors=True)

  def remove_stray_temporaries(self) -> list[str]:
    """Deletes half-written checkpoints left by a crash; returns their names."""
    if not os.path.isdir(self.directory):
      return []
    stray = [n for n in os.listdir(self.directory) if n.startswith('.round_')]
    for name in stray:
      shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
    return stray

  def verified_meta(self, round_num: int) -> dict[str, Any]:
    """meta.json of one checkpoint, after its manifest verified; raises
    `CheckpointError`. Pure Python: planning and early resume checks read
    a checkpoint's configuration and ledgers without TensorFlow."""
    path = self.path(round_num)
    try:
      with open(os.path.join(path, 'MANIFEST.json'), 'rb') as f:
        manifest = json.loads(f.read())
      for name in _FILES:
        file_path = os.path.join(path, name)
        entry = manifest[name]
        if os.path.getsize(file_path) != entry['bytes']:
          raise CheckpointError(f'{file_path}: size differs from the manifest '
                                '(truncated?)')
        if _sha256(file_path) != entry['sha256']:
          raise CheckpointError(f'{file_path}: checksum differs from the '
                                'manifest (corrupt)')
      with open(os.path.join(path, 'meta.json'), 'rb') as f:
        meta = json.loads(f.read())
    except CheckpointError:
      raise
    except (OSError, KeyError, TypeError, ValueError) as e:
      raise CheckpointError(
          f'{path}: unreadable ({type(e).__name__}: {e})') from e
    if not isinstance(meta, dict) or meta.get(
        'format_version') not in _READ_VERSIONS or meta.get(
            'round') != round_num:
      raise CheckpointError(f'{path}: unexpected format or round in meta.json')
    if meta['format_version'] == 2 and isinstance(meta.get('ledgers'), dict):
      try:
        meta['ledgers'] = ledger_journal.resolve(self.directory,
                                                 meta['ledgers'])
      except ledger_journal.JournalError as e:
        raise CheckpointError(f'{path}: {e}') from e
    return meta

  def latest_verified_meta(
      self) -> tuple[Optional[int], Optional[dict[str, Any]], list[str]]:
    """(round, meta) of the newest checkpoint whose files verify, and why
    newer ones were skipped; (None, None, reasons) if none does."""
    skipped = []
    for round_num in reversed(self.rounds()):
      try:
        return round_num, self.verified_meta(round_num), skipped
      except CheckpointError as e:
        skipped.append(str(e))
    return None, None, skipped

  def load(self, round_num: int, template_state: Any) -> Checkpoint:
    """Loads and verifies one checkpoint; raises `CheckpointError`."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    meta = self.verified_meta(round_num)
    path = self.path(round_num)
    try:
      with np.load(os.path.join(path, 'state.npz'),
                   allow_pickle=False) as arrays:
        leaves = [arrays[f'arr_{i}'] for i in range(len(arrays.files))]
    except (OSError, KeyError, TypeError, ValueError) as e:
      raise CheckpointError(
          f'{path}: unreadable ({type(e).__name__}: {e})') from e
    template = tf.nest.flatten(template_state)
    if len(leaves) != len(template):
      raise CheckpointError(f'{path}: holds {len(leaves)} tensors, the model '
                            f'has {len(template)} (different model or flags?)')
    for i, (leaf, expected) in enumerate(zip(leaves, template)):
      expected = np.asarray(expected)
      if leaf.shape != expected.shape or leaf.dtype != expected.dtype:
        raise CheckpointError(
            f'{path}: tensor {i} is {leaf.dtype}{list(leaf.shape)}, the model '
            f'expects {expected.dtype}{list(expected.shape)}')
    leaves = [
        leaf.item() if isinstance(t, bytes) else leaf
        for leaf, t in zip(leaves, template)
    ]
    state = tf.nest.pack_sequence_as(template_state, leaves)
    return Checkpoint(round_num=round_num, state=state, meta=meta, path=path)

  def move_aside(self, round_nums: list[int]) -> list[str]:
    """Renames the checkpoints of `round_nums` to `corrupt-round_<r>...` (kept
    for inspection, never loaded), so that their rounds can be saved again."""
    moved = []
    for round_num in round_nums:
      source = self.path(round_num)
      if not os.path.exists(source):
        continue
      target = os.path.join(self.directory, f'corrupt-round_{round_num:08d}')
      suffix = 1
      while os.path.exists(target):
        suffix += 1
        target = os.path.join(self.directory,
                              f'corrupt-round_{round_num:08d}-{suffix}')
      os.rename(source, target)
      moved.append(target)
    if moved:
      atomic_io.fsync_directory(self.directory)
    return moved

  def load_latest_valid(
      self, template_state: Any
  ) -> tuple[Optional[Checkpoint], list[tuple[int, str]]]:
    """The newest checkpoint that verifies, and the newer ones skipped as
    (round, why)."""
    skipped = []
    for round_num in reversed(self.rounds()):
      try:
        return self.load(round_num, template_state), skipped
      except CheckpointError as e:
        skipped.append((round_num, str(e)))
    return None, skipped

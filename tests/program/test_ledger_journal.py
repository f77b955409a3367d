"""Checkpoints keep the central ledger in an append-only journal (format 2).

What a checkpoint writes per round must not grow with the run, while each
checkpoint still restores exactly the ledger that charged it: these tests
pin that `verified_meta` gives the meta.json of format 1 (the ledgers
inline) bit for bit, that meta.json stays the same size as rounds pass, that
older checkpoints stay valid as the journal grows, that a journal cut or
changed fails the checkpoints that refer to it (naming the file) and that a
resumed run (a new process, an older checkpoint) rewrites it consistently.
"""

import collections
import json
import os

import dp_accounting
import numpy as np
import pytest

from tff_dp.privacy import local_accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.program import checkpoint
from tff_dp.program import ledger_journal


def _state():
  return collections.OrderedDict(w=np.zeros((2, 2), np.float32))


def _event(round_num):
  return dp_accounting.PoissonSampledDpEvent(
      0.1, dp_accounting.GaussianDpEvent(1.3 if round_num % 4 == 0 else 1.0))


def _ledger(rounds):
  ledger = privacy_ledger.PrivacyLedger(
      dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  for r in range(1, rounds + 1):
    ledger.record(r, _event(r))
  return ledger


def _meta(ledger):
  return {
      'config': {
          'rounds': 9
      },
      'ledgers': {
          'central': ledger.to_json(),
          'local': {
              'rounds': [[1, 2]]
          },
          'silos': None
      },
      'released': {
          'privacy/epsilon_rdp': float('nan')
      },
  }


def _format_1(meta, round_num):
  """meta.json's content as format 1 wrote it (the ledgers inline)."""
  return json.loads(
      json.dumps(dict(meta, round=round_num, format_version=1), allow_nan=True))


def _run(manager, rounds, ledger=None, start=1):
  ledger = ledger or _ledger(start - 1)
  for r in range(start, rounds + 1):
    ledger.record(r, _event(r))
    manager.save(r, _state(), _meta(ledger))
  return ledger


def test_each_checkpoint_restores_its_rounds_ledger_as_format_1_did(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path), keep=100)
  ledger = _ledger(0)
  for r in range(1, 8):
    ledger.record(r, _event(r))
    meta = _meta(ledger)
    manager.save(r, _state(), meta)
    expected = dict(_format_1(meta, r), format_version=2)
    for got in (manager.verified_meta(r),
                checkpoint.CheckpointManager(str(tmp_path)).verified_meta(r)):
      # NaN != NaN: compare the text.
      assert json.dumps(got, allow_nan=True) == json.dumps(expected,
                                                           allow_nan=True)
  # Older checkpoints stay valid as the journal grows.
  for r in range(1, 8):
    restored = manager.verified_meta(r)['ledgers']['central']
    assert privacy_ledger.PrivacyLedger.from_json(
        restored).events == ledger.events[:r]


def test_what_a_round_writes_does_not_grow_with_the_run(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path))
  ledger = _run(manager, 3)
  journal = os.path.join(manager.directory, ledger_journal.file_name('central'))
  sizes, appended = [], []
  for r in range(4, 40):
    before = os.path.getsize(journal)
    _run(manager, r, ledger, start=r)
    appended.append(os.path.getsize(journal) - before)
    sizes.append(os.path.getsize(os.path.join(manager.path(r), 'meta.json')))
  # One round's line per round; meta.json varies only with the digits of
  # the numbers in its reference.
  assert set(appended) <= {
      len(line.rstrip(',').encode()) + 1
      for line in ledger.to_text().split('\n')[1:-2]
  }
  assert max(sizes) - min(sizes) <= 4


@pytest.mark.parametrize('damage', ['cut', 'flipped', 'removed'])
def test_a_damaged_journal_fails_its_checkpoints_naming_it(tmp_path, damage):
  manager = checkpoint.CheckpointManager(str(tmp_path), keep=5)
  _run(manager, 5)
  journal = os.path.join(manager.directory, ledger_journal.file_name('central'))
  size = os.path.getsize(journal)
  if damage == 'cut':
    os.truncate(journal, size - 10)
  elif damage == 'flipped':
    with open(journal, 'r+b') as f:
      f.seek(size // 2)
      f.write(b'#')
  else:
    os.remove(journal)
  with pytest.raises(checkpoint.CheckpointError) as raised:
    manager.verified_meta(5)
  message = str(raised.value)
  assert journal in message and '\n' not in message
  if damage == 'cut':
    # Older checkpoints refer to shorter prefixes, still whole.
    assert manager.verified_meta(4)['round'] == 4


def test_a_crash_mid_append_leaves_every_checkpoint_valid(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path), keep=5)
  ledger = _run(manager, 4)
  journal = os.path.join(manager.directory, ledger_journal.file_name('central'))
  with open(journal, 'ab') as f:
    f.write(b'{"round": 5, "ev')  # The crash, before round 5's meta.json.
  assert manager.verified_meta(4)['ledgers']['central'] == ledger.to_json()
  # The resumed process (a new manager) rewrites the journal, then appends.
  resumed = checkpoint.CheckpointManager(str(tmp_path), keep=5)
  restored = privacy_ledger.PrivacyLedger.from_json(
      resumed.verified_meta(4)['ledgers']['central'])
  _run(resumed, 6, restored, start=5)
  for r in range(2, 7):
    assert resumed.verified_meta(r)['ledgers']['central'] == _ledger(
        r).to_json()


def test_a_resume_from_an_older_checkpoint_rewrites_the_journal(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path), keep=5)
  _run(manager, 5)
  manager.move_aside([5, 4])
  resumed = checkpoint.CheckpointManager(str(tmp_path), keep=5)
  restored = privacy_ledger.PrivacyLedger.from_json(
      resumed.verified_meta(3)['ledgers']['central'])
  _run(resumed, 5, restored, start=4)
  assert resumed.verified_meta(5)['ledgers']['central'] == _ledger(5).to_json()


def test_format_1_checkpoints_still_load(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path))
  ledger = _run(manager, 2)
  # Rewrite round 2 as format 1 wrote it: the ledgers in meta.json.
  path = manager.path(2)
  meta = _format_1(_meta(ledger), 2)
  with open(os.path.join(path, 'meta.json'), 'w', encoding='utf-8') as f:
    f.write(json.dumps(meta, allow_nan=True))
  with open(os.path.join(path, 'MANIFEST.json'), encoding='utf-8') as f:
    manifest = json.load(f)
  manifest['meta.json'] = {
      'sha256': checkpoint._sha256(os.path.join(path, 'meta.json')),  # pylint: disable=protected-access
      'bytes': os.path.getsize(os.path.join(path, 'meta.json'))
  }
  with open(os.path.join(path, 'MANIFEST.json'), 'w', encoding='utf-8') as f:
    json.dump(manifest, f)
  assert manager.verified_meta(2)['ledgers']['central'] == ledger.to_json()


def _local_ledger(rounds, population=40, cohort=12):
  spec = local_accounting.LocalMechanismSpec(
      mechanism=local_accounting.LocalMechanism.LAPLACE,
      epsilon_local=1.0,
      noise_multiplier=None)
  local = local_accounting.LocalPrivacyLedger(spec, population=population)
  for r in range(1, rounds + 1):
    local.record_round(r, [(r * 7 + i) % population for i in range(cohort)])
  return local


def test_the_local_ledger_is_journaled_and_restored_with_its_counts(tmp_path):
  manager = checkpoint.CheckpointManager(str(tmp_path), keep=100)
  ledger, local, sizes = _ledger(0), _local_ledger(0), []
  for r in range(1, 30):
    ledger.record(r, _event(r))
    local.record_round(r, _local_ledger(r).cohort(r))
    manager.save(
        r, _state(),
        dict(_meta(ledger),
             ledgers={
                 'central': ledger.to_json(),
                 'local': local.to_json(),
                 'silos': None
             }))
    sizes.append(os.path.getsize(os.path.join(manager.path(r), 'meta.json')))
  assert os.path.exists(
      os.path.join(manager.directory, ledger_journal.file_name('local')))
  # The cohorts are in the journal, not copied into every meta.json.
  assert max(sizes) - min(sizes) <= 8
  for r in (1, 17, 29):
    restored = local_accounting.LocalPrivacyLedger.from_json(
        manager.verified_meta(r)['ledgers']['local'])
    expected = _local_ledger(r)
    assert restored.to_json() == expected.to_json()
    assert restored.participation_counts == expected.participation_counts


def test_a_local_ledger_whose_counts_disagree_is_refused():
  content = dict(_local_ledger(3).to_json())
  content['participation_counts'] = {'0': 9}
  with pytest.raises(local_accounting.LedgerFormatError, match='disagree'):
    local_accounting.LocalPrivacyLedger.from_json(content)
  del content['population']
  with pytest.raises(local_accounting.LedgerFormatError, match='keys'):
    local_accounting.LocalPrivacyLedger.from_json(content)

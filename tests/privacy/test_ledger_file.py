"""ledger.json extended in place: the same bytes as a full rewrite, crash-safe.

`PrivacyLedger.save` writes the file in full once, then cuts its closing
tail and appends each new round's line (O(1) per round). These tests pin
that the file is always exactly `to_text()` (the format every reader knows),
that every state a crash during an extension can leave is read as the
ledger up to its last whole round, and that a corrupt file is refused with
one message naming it. Pure Python.
"""

import json
import os

import dp_accounting
import pytest

from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger

_EVENT = dp_accounting.PoissonSampledDpEvent(0.1,
                                             dp_accounting.GaussianDpEvent(1.0))
_OTHER = dp_accounting.PoissonSampledDpEvent(0.1,
                                             dp_accounting.GaussianDpEvent(2.0))


def _ledger(rounds: int) -> privacy_ledger.PrivacyLedger:
  ledger = privacy_ledger.PrivacyLedger(
      accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
  for r in range(1, rounds + 1):
    ledger.record(r, _EVENT if r % 3 else _OTHER)
  return ledger


def _read(path) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read()


def test_each_save_leaves_the_text_of_a_full_rewrite(tmp_path):
  path = tmp_path / 'ledger.json'
  ledger = _ledger(0)
  for r in range(1, 12):
    ledger.save(path)
    assert _read(path) == ledger.to_text()
    # Readers of the format (json, the ledger's own) see the same ledger.
    assert json.loads(_read(path)) == ledger.to_json()
    assert privacy_ledger.PrivacyLedger.load(path).events == ledger.events
    ledger.record(r, _EVENT if r % 3 else _OTHER)
  # Two rounds recorded between saves are appended together.
  ledger.record(12, _EVENT)
  ledger.save(path)
  assert _read(path) == ledger.to_text()


def test_a_save_extends_the_file_instead_of_replacing_it(tmp_path):
  path = tmp_path / 'ledger.json'
  ledger = _ledger(5)
  ledger.save(path)
  inode = os.stat(path).st_ino
  ledger.record(6, _EVENT)
  ledger.save(path)
  # The atomic rewrite would have renamed a new file over it.
  assert os.stat(path).st_ino == inode
  assert _read(path) == ledger.to_text()


@pytest.mark.parametrize('change', ['edited', 'replaced', 'fewer rounds'])
def test_a_file_changed_behind_the_ledger_is_rewritten_in_full(
    tmp_path, change):
  path = tmp_path / 'ledger.json'
  ledger = _ledger(4)
  ledger.save(path)
  if change == 'edited':
    with open(path, 'a', encoding='utf-8') as f:
      f.write(' ')
  elif change == 'replaced':
    _ledger(2).save(path)
  else:
    ledger = _ledger(3)
  ledger.record(ledger.rounds + 1, _EVENT)
  ledger.save(path)
  assert _read(path) == ledger.to_text()


def test_every_state_a_crash_mid_extension_leaves_reads_as_whole_rounds(
    tmp_path):
  path = tmp_path / 'ledger.json'
  before, after = _ledger(4), _ledger(6)
  old, new = before.to_text(), after.to_text()
  tail = len('\n]}\n')
  # `save` cuts the tail, then writes the new lines and tail: a crash leaves
  # the old file or any prefix of the new one longer than the cut file.
  states = [old] + [new[:n] for n in range(len(old) - tail, len(new) + 1)]
  seen = set()
  for text in states:
    path.write_text(text, encoding='utf-8')
    loaded = privacy_ledger.PrivacyLedger.load(path)
    # Never a round that was not recorded; never fewer than were saved.
    assert loaded.events == after.events[:loaded.rounds]
    assert 4 <= loaded.rounds <= 6
    seen.add(loaded.rounds)
  assert seen == {4, 5, 6}


@pytest.mark.parametrize('corruption', [
    'a middle round garbled', 'comma missing', 'header garbled', 'only a brace'
])
def test_a_corrupt_ledger_is_refused_with_one_line_naming_it(
    tmp_path, corruption):
  path = tmp_path / 'ledger.json'
  lines = _ledger(4).to_text().split('\n')
  if corruption == 'a middle round garbled':
    lines[2] = lines[2][:20] + '#' + lines[2][21:]
  elif corruption == 'comma missing':
    lines[2] = lines[2].rstrip(',')
    lines = lines[:-2]  # Cut short too, so that it is not plain JSON.
  elif corruption == 'header garbled':
    lines[0] = lines[0].replace('"rounds"', '"round"')
    lines = lines[:-2]
  else:
    lines = ['{']
  path.write_text('\n'.join(lines), encoding='utf-8')
  with pytest.raises(accounting.LedgerFormatError) as raised:
    privacy_ledger.PrivacyLedger.load(path)
  message = str(raised.value)
  assert str(path) in message and '\n' not in message


def test_a_cut_round_that_skips_a_number_is_refused(tmp_path):
  path = tmp_path / 'ledger.json'
  lines = _ledger(5).to_text().split('\n')
  del lines[2]  # Round 2 missing, and the file cut inside round 5.
  path.write_text('\n'.join(lines)[:-30], encoding='utf-8')
  with pytest.raises(accounting.LedgerFormatError, match='round'):
    privacy_ledger.PrivacyLedger.load(path)

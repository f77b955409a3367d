"""Cached epsilons and the ledger's kept JSON equal what was computed before.

`accounting.compute_epsilon` remembers epsilons by composition
(`tff_dp.privacy.epsilon_cache`) and `PrivacyLedger` keeps each round's
JSON as it is recorded, so that the loop's time outside the round does not
grow with the round number. Every epsilon must still be the one the
accountant gives for the events that ran, to the last bit: each is checked
here against a computation with the cache emptied first.
"""

import json
import math

import dp_accounting
from dp_accounting import dp_event
import pytest

from tff_dp.cohorts import epoch_sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import epsilon_cache
from tff_dp.privacy import example_accounting
from tff_dp.privacy import local_accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import privacy_tracking

RDP = accounting.AccountantKind.RDP
PLD = accounting.AccountantKind.PLD
DELTA = 1e-5
ADD_OR_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def _poisson(z: float, q: float = 0.1) -> dp_event.DpEvent:
  return dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))


def _uncached(compute):
  """`compute()` with the cache emptied first: what the code computed before."""
  accounting.EPSILONS.clear()
  return compute()


def _tracker(round_event, relation=ADD_OR_REMOVE, **kwargs):
  return privacy_tracking.PrivacyTracker(
      ledger=privacy_ledger.PrivacyLedger(relation),
      round_event=round_event,
      delta=DELTA,
      accountants=(RDP, PLD),
      **kwargs)


def _noise_change(round_num: int) -> dp_event.DpEvent:
  # z 1.0, then 1.3 from round 5, then 1.0 again from round 9: new groups
  # and a group that grows again after another was appended.
  return _poisson(1.3 if 5 <= round_num < 9 else 1.0)


def _tree(round_num: int) -> dp_event.DpEvent:
  return epoch_sampling.tree_round_event(round_num,
                                         noise_multiplier=1.0,
                                         rounds_per_epoch=4)


def _fixed_size(round_num: int) -> dp_event.DpEvent:
  del round_num
  return dp_event.SampledWithoutReplacementDpEvent(
      source_dataset_size=40, sample_size=10, event=dp_event.GaussianDpEvent(1))


_RUNS = {
    'noise_change': (_noise_change, ADD_OR_REMOVE),
    'dp_ftrl_tree': (_tree, epoch_sampling.NEIGHBORING_RELATION),
    'fixed_size': (_fixed_size, dp_accounting.NeighboringRelation.REPLACE_ONE),
}


@pytest.mark.parametrize('run', sorted(_RUNS))
def test_cached_epsilons_are_the_uncached_ones_round_by_round(run):
  round_event, relation = _RUNS[run]
  tracker = _tracker(round_event, relation)
  for round_num in range(1, 13):
    # As the loop asks: the budget check, then the release after the round.
    check = tracker.epsilons(next_round=round_num)
    assert check == _uncached(lambda: tracker.epsilons(next_round=round_num))
    tracker.charge(round_num, [0])
    released = tracker.epsilons()
    assert released == _uncached(tracker.epsilons)
    # NaN (an accountant that refuses the events) compares unequal: by str.
    assert str(released) == str(check)
  if run == 'dp_ftrl_tree':
    assert math.isnan(released[PLD]) and released[RDP] > 0


def test_the_release_after_a_round_is_the_budget_checks_computation():
  tracker = _tracker(lambda _: _poisson(1.0))
  accounting.EPSILONS.clear()
  for round_num in range(1, 6):
    tracker.epsilons(next_round=round_num)
    tracker.charge(round_num, [0])
    misses = accounting.EPSILONS.misses
    tracker.released_values()
    assert accounting.EPSILONS.misses == misses  # Both accountants: hits.


def test_composition_key_is_that_of_the_ledger_after_the_round():
  ledger = privacy_ledger.PrivacyLedger(ADD_OR_REMOVE)
  for round_num, event in enumerate(
      [_poisson(1.0), _poisson(1.3),
       _poisson(1.0)], start=1):
    before = (list(ledger.events) + [event])
    ledger.record(round_num, event)
    assert (
        epsilon_cache.composition_key(before) == epsilon_cache.composition_key(
            ledger.events))
  assert epsilon_cache.composition_key(
      [_poisson(1.0)] * 3) == (epsilon_cache.composition_key(
          [dp_event.SelfComposedDpEvent(_poisson(1.0), 3)]))
  assert epsilon_cache.composition_key([
      _poisson(1.0), _poisson(1.3)
  ]) != (epsilon_cache.composition_key([_poisson(1.3),
                                        _poisson(1.0)]))


def test_a_refusal_is_remembered_and_raised_again():
  tree = dp_event.SingleEpochTreeAggregationDpEvent(1.0, 4)
  for _ in range(2):
    with pytest.raises(accounting.UnsupportedAccountingError, match='PLD'):
      accounting.compute_epsilon([tree],
                                 delta=DELTA,
                                 accountant=PLD,
                                 relation=epoch_sampling.NEIGHBORING_RELATION)


def test_cache_is_bounded():
  cache = epsilon_cache.EpsilonCache(max_entries=2)
  for key in range(5):
    assert cache.get_or_compute(key, lambda k=key: float(k)) == key
  assert cache.get_or_compute(4, lambda: -1.0) == 4.0  # Kept: a hit.
  assert cache.get_or_compute(0, lambda: -1.0) == -1.0  # Dropped: computed.


def test_local_and_silo_ledgers_are_unaffected():
  spec = local_accounting.LocalMechanismSpec(
      mechanism=local_accounting.LocalMechanism.GAUSSIAN, noise_multiplier=2.0)
  tracker = _tracker(lambda _: _poisson(1.0))
  tracker.local = local_accounting.LocalPrivacyLedger(spec, population=5)
  tracker.silos = example_accounting.SiloLedger(
      settings=example_accounting.ExampleDpSettings(noise_multiplier=1.1,
                                                    expected_batch_size=8,
                                                    local_steps=2),
      num_examples=[64, 128, 32, 64, 64])
  for round_num in range(1, 6):
    tracker.charge(round_num, [0, round_num % 4 + 1])
    assert tracker.released_values() == _uncached(tracker.released_values)
    assert str(tracker.record_level_report()) == str(
        _uncached(tracker.record_level_report))


def test_resumed_tracker_gives_the_same_epsilons():
  tracker = _tracker(_noise_change)
  for round_num in range(1, 11):
    tracker.charge(round_num, [0])
  saved = json.loads(json.dumps(tracker.to_json()))
  resumed = _tracker(_noise_change)
  resumed.restore_json(saved)
  assert resumed.epsilons() == tracker.epsilons()
  assert resumed.epsilons() == _uncached(tracker.epsilons)
  assert resumed.epsilons(
      next_round=11) == _uncached(lambda: tracker.epsilons(next_round=11))


def test_saved_ledger_is_its_json_and_loads(tmp_path):
  ledger = privacy_ledger.PrivacyLedger(ADD_OR_REMOVE)
  path = str(tmp_path / 'ledger.json')
  ledger.save(path)
  assert privacy_ledger.PrivacyLedger.load(path).rounds == 0
  for round_num in range(1, 8):
    ledger.record(round_num, _noise_change(round_num))
  ledger.save(path)
  with open(path) as f:
    assert json.load(f) == ledger.to_json()
  # The same JSON the ledger gave before it kept its rounds' JSON.
  assert ledger.to_json()['rounds'] == [{
      'round': i + 1,
      'event': accounting.event_to_json(e)
  } for i, e in enumerate(ledger.events)]
  loaded = privacy_ledger.PrivacyLedger.load(path)
  assert loaded.events == ledger.events
  assert loaded.to_text() == ledger.to_text()


def test_the_ledgers_kept_lines_are_json_dumps_of_its_json():
  for relation, event in [(ADD_OR_REMOVE, _noise_change),
                          (epoch_sampling.NEIGHBORING_RELATION, _tree)]:
    ledger = privacy_ledger.PrivacyLedger(relation)
    for round_num in range(1, 10):
      ledger.record(round_num, event(round_num))
    as_json = ledger.to_json()
    journal = as_json.journal
    head = dict(as_json)
    del head['rounds']
    assert journal.head == json.dumps(head)
    assert journal.lines[:journal.count] == [
        json.dumps(entry) for entry in as_json['rounds']
    ]
    # The JSON is that of its rounds, even after more were recorded.
    ledger.record(10, event(10))
    assert journal.count == len(as_json['rounds']) == 9

"""Epsilons computed in the background are the floats computed in the caller.

`PrivacyTracker.prefetch_epsilons` (`tff_dp.privacy.epsilon_cache`) computes
what the loop asks for next in a background thread while a round trains; a
request waits for a computation under way instead of starting another, and a
background failure other than a refusal leaves the request to fail as it did
before. Pure Python.
"""

import math
import threading

import dp_accounting
from dp_accounting import dp_event
import pytest

from tff_dp.cohorts import epoch_sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import epsilon_cache
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import privacy_tracking

RDP = accounting.AccountantKind.RDP
PLD = accounting.AccountantKind.PLD
ADD_OR_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def _poisson(z: float) -> dp_event.DpEvent:
  return dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(z))


def _tracker(round_event, relation=ADD_OR_REMOVE):
  return privacy_tracking.PrivacyTracker(
      ledger=privacy_ledger.PrivacyLedger(relation),
      round_event=round_event,
      delta=1e-5,
      accountants=(RDP, PLD))


def _uncached(compute):
  accounting.EPSILONS.clear()
  return compute()


@pytest.mark.parametrize('run', ['noise_change', 'dp_ftrl_tree'])
def test_prefetched_epsilons_are_the_floats_computed_afresh(run):
  if run == 'noise_change':
    tracker = _tracker(lambda r: _poisson(1.3 if 4 <= r < 6 else 1.0))
  else:
    tracker = _tracker(
        lambda r: epoch_sampling.tree_round_event(
            r, noise_multiplier=1.0, rounds_per_epoch=3),
        epoch_sampling.NEIGHBORING_RELATION)
  accounting.EPSILONS.clear()
  for round_num in range(1, 8):
    tracker.prefetch_epsilons([round_num, round_num + 1])
    tracker.charge(round_num, [0])
    accounting.EPSILONS.wait()
    released = tracker.epsilons()
    checked = tracker.epsilons(next_round=round_num + 1)
    assert str(released) == str(_uncached(tracker.epsilons))
    assert str(checked) == str(
        _uncached(lambda r=round_num: tracker.epsilons(next_round=r + 1)))
    for value in list(released.values()) + list(checked.values()):
      assert math.isnan(value) or value > 0
    if run == 'noise_change':
      # Both requests found the prefetched floats.
      accounting.EPSILONS.clear()
      tracker.prefetch_epsilons([round_num + 1])
      accounting.EPSILONS.wait()
      assert accounting.EPSILONS.prefetched == 2
      tracker.epsilons(next_round=round_num + 1)
      assert (accounting.EPSILONS.hits, accounting.EPSILONS.misses) == (2, 0)


def test_a_request_waits_for_the_computation_under_way():
  cache = epsilon_cache.EpsilonCache()
  started, release = threading.Event(), threading.Event()

  def slow():
    started.set()
    release.wait(10)
    return 1.5

  cache.prefetch('key', slow)
  assert started.wait(10)
  threading.Timer(0.05, release.set).start()
  assert cache.get_or_compute('key',
                              lambda: pytest.fail('computed twice')) == (1.5)
  assert (cache.hits, cache.misses, cache.prefetched) == (1, 0, 1)
  cache.prefetch('key', lambda: pytest.fail('known keys are not prefetched'))
  cache.wait()


def test_a_background_failure_is_left_to_the_request():
  cache = epsilon_cache.EpsilonCache()

  def broken():
    raise RuntimeError('background')

  cache.prefetch('a', broken)
  cache.prefetch('b', broken)
  cache.wait()
  with pytest.raises(RuntimeError, match='foreground'):
    cache.get_or_compute(
        'a', lambda: (_ for _ in ()).throw(RuntimeError('foreground')))
  assert cache.get_or_compute('b', lambda: 2.0) == 2.0


def test_a_prefetched_refusal_is_raised_by_the_request():
  tree = dp_event.SingleEpochTreeAggregationDpEvent(1.0, 4)
  accounting.EPSILONS.clear()
  accounting.prefetch_epsilon([tree],
                              delta=1e-5,
                              accountant=PLD,
                              relation=epoch_sampling.NEIGHBORING_RELATION)
  accounting.EPSILONS.wait()
  with pytest.raises(accounting.UnsupportedAccountingError, match='PLD'):
    accounting.compute_epsilon([tree],
                               delta=1e-5,
                               accountant=PLD,
                               relation=epoch_sampling.NEIGHBORING_RELATION)
  assert accounting.EPSILONS.misses == 0


def test_budgets_changed_after_a_prefetch_are_not_stored_under_its_key(
    monkeypatch):
  accounting.EPSILONS.clear()
  events = [_poisson(1.0)] * 3
  settings = dict(delta=1e-5, accountant=PLD, relation=ADD_OR_REMOVE)
  gate = threading.Event()
  # Hold the background thread until the budget has changed.
  accounting.EPSILONS.prefetch('gate', lambda: gate.wait(10) and 0.0)
  accounting.prefetch_epsilon(events, **settings)
  monkeypatch.setattr(accounting, 'PLD_MAX_POINTS', 2**15)
  gate.set()
  accounting.EPSILONS.wait()
  assert accounting.EPSILONS.prefetched == 1  # The gate only.
  monkeypatch.undo()
  assert accounting.compute_epsilon(events, **settings) == _uncached(
      lambda: accounting.compute_epsilon(events, **settings))

"""Tests for tff_dp.cohorts.epoch_sampling: shuffled epochs and DP-FTRL's accounting.

Pure Python. The statistical test runs with a fixed seed, so it is
deterministic; its stated flake rate is the probability that a correct sampler
fails for a random seed (normal approximation, 6-sigma two-sided bound,
~2e-9 per comparison, < 1e-7 over the test's comparisons).
"""

import json
import math

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import rdp
import numpy as np
import pytest

from tff_dp.cohorts import epoch_sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger

EpochSampler = epoch_sampling.EpochSampler
REPLACE_SPECIAL = dp_accounting.NeighboringRelation.REPLACE_SPECIAL
RDP = accounting.AccountantKind.RDP
PLD = accounting.AccountantKind.PLD
DELTA = 1e-5


def _epoch_cohorts(sampler, epoch):
  first = epoch * sampler.rounds_per_epoch + 1
  return [
      sampler.sample(r) for r in range(first, first + sampler.rounds_per_epoch)
  ]


# --- Validation. -------------------------------------------------------------


@pytest.mark.parametrize('kwargs, field', [
    (dict(population=0, clients_per_round=1), 'population'),
    (dict(population=10, clients_per_round=0), 'clients_per_round'),
    (dict(population=10, clients_per_round=11), 'clients_per_round'),
    (dict(population=10, clients_per_round=2, seed=-1), 'seed'),
    (dict(population=10, clients_per_round=2, seed=2**128), 'seed'),
])
def test_invalid_values_raise_value_error_naming_field(kwargs, field):
  with pytest.raises(ValueError, match=field):
    EpochSampler(**(dict(seed=0) | kwargs))


def test_bools_and_floats_are_not_counts():
  with pytest.raises(TypeError, match='clients_per_round'):
    EpochSampler(population=10, clients_per_round=True, seed=0)
  with pytest.raises(TypeError, match='population'):
    EpochSampler(population=10.0, clients_per_round=2, seed=0)


def test_rounds_are_one_based():
  # The ledger and the training loop count from 1, and the tree restarts
  # after every R calls of `next`: round 0 would shift every epoch by one.
  sampler = EpochSampler(population=10, clients_per_round=2, seed=0)
  for method in (sampler.sample, sampler.epoch_of, sampler.is_epoch_start):
    with pytest.raises(ValueError, match='round_num'):
      method(0)


# --- The schedule. -----------------------------------------------------------


def test_epoch_bookkeeping():
  sampler = EpochSampler(population=10, clients_per_round=3, seed=0)
  assert sampler.rounds_per_epoch == 3  # 10 // 3; one client sits out.
  assert sampler.clients_per_epoch == 9
  assert [sampler.epoch_of(r) for r in range(1, 8)] == [0, 0, 0, 1, 1, 1, 2]
  assert [sampler.round_in_epoch(r) for r in range(1, 8)
         ] == [1, 2, 3, 1, 2, 3, 1]
  assert [r for r in range(1, 11) if sampler.is_epoch_start(r)] == [1, 4, 7, 10]


def test_every_client_exactly_once_per_epoch_when_n_divides_population():
  sampler = EpochSampler(population=12, clients_per_round=4, seed=1)
  for epoch in range(5):
    cohorts = _epoch_cohorts(sampler, epoch)
    assert all(len(c) == 4 and np.all(np.diff(c) > 0) for c in cohorts)
    np.testing.assert_array_equal(np.sort(np.concatenate(cohorts)),
                                  np.arange(12))


def test_remainder_sits_out_and_nobody_appears_twice_in_an_epoch():
  sampler = EpochSampler(population=23, clients_per_round=5, seed=2)
  left_out = []
  for epoch in range(6):
    cohorts = _epoch_cohorts(sampler, epoch)
    assert all(len(c) == 5 for c in cohorts)  # Never a smaller cohort.
    seen = np.concatenate(cohorts)
    assert len(np.unique(seen)) == len(seen) == 20
    assert seen.min() >= 0 and seen.max() < 23
    left_out.append(frozenset(set(range(23)) - set(seen.tolist())))
  assert len(set(left_out)) > 1  # A fresh remainder each epoch.


def test_seed_and_epoch_determine_the_cohorts():
  a = EpochSampler(population=50, clients_per_round=7, seed=11)
  b = EpochSampler(population=50, clients_per_round=7, seed=11)
  c = EpochSampler(population=50, clients_per_round=7, seed=12)
  rounds = range(1, 3 * a.rounds_per_epoch + 1)
  forward = [a.sample(r) for r in rounds]
  # A resumed run (fresh object, rounds asked in another order) redraws the
  # same cohorts: no sampler state to checkpoint.
  backward = [b.sample(r) for r in reversed(rounds)][::-1]
  for x, y in zip(forward, backward):
    np.testing.assert_array_equal(x, y)
  assert any(
      not np.array_equal(x, c.sample(r)) for x, r in zip(forward, rounds))
  assert not np.array_equal(a.epoch_order(0), a.epoch_order(1))
  assert not a.epoch_order(0).flags.writeable


def test_each_client_sits_out_with_the_remainder_probability():
  # N = 10, n = 3: one client per epoch sits out, P = 1/10 for each client;
  # and client 0 is in round 1 of an epoch with P = 3/10.
  sampler = EpochSampler(population=10, clients_per_round=3, seed=4)
  epochs = 4000
  sat_out = np.zeros(10)
  first_round = 0
  for epoch in range(epochs):
    cohorts = _epoch_cohorts(sampler, epoch)
    present = np.zeros(10, bool)
    present[np.concatenate(cohorts)] = True
    sat_out += ~present
    first_round += 0 in cohorts[0]
  for observed, p in [(sat_out / epochs, 0.1), (first_round / epochs, 0.3)]:
    se = math.sqrt(p * (1 - p) / epochs)
    assert np.max(np.abs(np.asarray(observed) - p)) <= 6 * se, observed


# --- Accounting. -------------------------------------------------------------


def test_round_events_charge_each_epoch_at_its_first_round():
  sampler = EpochSampler(population=10, clients_per_round=3, seed=0)
  events = [sampler.round_event(r, noise_multiplier=1.5) for r in range(1, 8)]
  tree = dp_event.SingleEpochTreeAggregationDpEvent(1.5, 3)
  noop = dp_event.NoOpDpEvent()
  assert events == [tree, noop, noop, tree, noop, noop, tree]
  assert [
      epoch_sampling.tree_round_event(r,
                                      noise_multiplier=1.5,
                                      rounds_per_epoch=3) for r in range(1, 8)
  ] == events
  assert epoch_sampling.tree_epoch_event(
      noise_multiplier=0.0, rounds_in_epoch=3) == dp_event.NonPrivateDpEvent()
  with pytest.raises(ValueError, match='noise_multiplier'):
    sampler.round_event(2, noise_multiplier=float('nan'))


def _hand_built_epsilon(*, noise_multiplier, rounds_per_epoch, epochs):
  accountant = rdp.RdpAccountant(neighboring_relation=REPLACE_SPECIAL)
  accountant.compose(
      dp_event.SingleEpochTreeAggregationDpEvent(noise_multiplier,
                                                 rounds_per_epoch), epochs)
  return accountant.get_epsilon(DELTA)


def test_ledger_epsilon_equals_hand_built_composition_of_epochs():
  z = 1.2
  sampler = EpochSampler(population=700, clients_per_round=70, seed=0)
  per_epoch = sampler.rounds_per_epoch  # 10.
  ledger = privacy_ledger.PrivacyLedger(epoch_sampling.NEIGHBORING_RELATION)
  epsilons = []
  for round_num in range(1, 26):  # 2.5 epochs: the third is charged whole.
    event = sampler.round_event(round_num, noise_multiplier=z)
    # Charged before release: the budget check with the next event already
    # includes the whole epoch at its first round.
    expected_next = ledger.epsilon_with(event, delta=DELTA, accountant=RDP)
    ledger.record(round_num, event)
    epsilons.append(ledger.epsilon(delta=DELTA, accountant=RDP))
    assert epsilons[-1] == pytest.approx(expected_next, rel=1e-12)
    epochs = sampler.epoch_of(round_num) + 1
    assert epsilons[-1] == pytest.approx(_hand_built_epsilon(
        noise_multiplier=z, rounds_per_epoch=per_epoch, epochs=epochs),
                                         rel=1e-12)
  assert epsilons[0] == epsilons[9] < epsilons[10] == epsilons[19] < (
      epsilons[20])
  assert accounting.compute_epsilon([
      epoch_sampling.tree_round_event(
          r, noise_multiplier=z, rounds_per_epoch=per_epoch)
      for r in range(1, 26)
  ],
                                    delta=DELTA,
                                    accountant=RDP,
                                    relation=REPLACE_SPECIAL) == pytest.approx(
                                        epsilons[-1], rel=1e-12)
  # The ledger survives its JSON form.
  again = privacy_ledger.PrivacyLedger.from_json(
      json.loads(json.dumps(ledger.to_json())))
  assert again.epsilon(delta=DELTA,
                       accountant=RDP) == pytest.approx(epsilons[-1], rel=1e-12)
  # PLD cannot compose tree aggregation in dp-accounting 0.4.3: no number.
  with pytest.raises(accounting.UnsupportedAccountingError):
    ledger.epsilon(delta=DELTA, accountant=PLD)


def test_epoch_event_is_a_gaussian_of_sensitivity_sqrt_tree_depth():
  # Kairouz et al. 2021, Appendix D: one leaf per client touches one node per
  # level, ceil(log2(R + 1)) levels, so E epochs are a Gaussian mechanism
  # with multiplier z / sqrt(E * depth). R = 10 -> depth 4.
  z, per_epoch, epochs = 1.2, 10, 3
  gaussian = rdp.RdpAccountant()
  gaussian.compose(dp_event.GaussianDpEvent(z / math.sqrt(epochs * 4)))
  assert _hand_built_epsilon(noise_multiplier=z,
                             rounds_per_epoch=per_epoch,
                             epochs=epochs) == pytest.approx(
                                 gaussian.get_epsilon(DELTA), rel=1e-9)


def test_tree_events_need_replace_special():
  event = epoch_sampling.tree_epoch_event(noise_multiplier=1.0,
                                          rounds_in_epoch=4)
  with pytest.raises(accounting.UnsupportedAccountingError):
    privacy_ledger.PrivacyLedger(
        dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE).record(1, event)

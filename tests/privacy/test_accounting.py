"""Tests for tff_dp.privacy.accounting.

Golden epsilons are computed here from hand-built dp_accounting events (not
through the module under test) and pinned as literals; the module must agree
with both. The literals were computed with dp-accounting 0.4.3, numpy 1.25,
scipy 1.9.3; the tolerance only absorbs floating-point differences.
"""

import itertools
import json
import math
import os
import time

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting import rdp
from dp_accounting.pld import privacy_loss_mechanism
import numpy as np
import pytest

from tests.helpers import fresh_imports
from tests.helpers import json_edits
from tests.helpers import ledgers
from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import calibration
from tff_dp.privacy import dp_event_json
from tff_dp.privacy import privacy_ledger

AccountantKind = accounting.AccountantKind
ClientSampling = sampling.ClientSampling

# Shuffled epochs are drawn by EpochSampler and accounted with tree events.
_DRAWN_BY_CLIENT_SAMPLER = [
    m for m in ClientSampling if m is not ClientSampling.SHUFFLED_EPOCHS
]
Relation = dp_accounting.NeighboringRelation
ADD_REMOVE = Relation.ADD_OR_REMOVE_ONE
REPLACE_ONE = Relation.REPLACE_ONE
RDP, PLD = AccountantKind.RDP, AccountantKind.PLD
DELTA = 1e-5
GOLDEN_REL = 1e-5


def _hand_rdp(event, relation=ADD_REMOVE, delta=DELTA):
  return rdp.RdpAccountant(
      neighboring_relation=relation).compose(event).get_epsilon(delta)


def _hand_pld(event, discretization, relation=ADD_REMOVE, delta=DELTA):
  return pld.PLDAccountant(
      neighboring_relation=relation,
      value_discretization_interval=discretization).compose(event).get_epsilon(
          delta)


def _poisson(population, n, z, rounds=1):
  return dp_event.SelfComposedDpEvent(
      accounting.gaussian_round_event(sampling=ClientSampling.POISSON,
                                      population=population,
                                      clients_per_round=n,
                                      noise_multiplier=z), rounds)


def _eps(events, accountant, relation=ADD_REMOVE, **kwargs):
  return accounting.compute_epsilon(events,
                                    delta=DELTA,
                                    accountant=accountant,
                                    relation=relation,
                                    **kwargs)


def test_modules_do_not_import_tensorflow():
  assert fresh_imports.heavy_imports('tff_dp.cohorts.sampling',
                                     'tff_dp.privacy.accounting') == []


# --- Events. -----------------------------------------------------------------


def test_neighboring_relation():
  assert accounting.neighboring_relation(ClientSampling.POISSON) is ADD_REMOVE
  assert accounting.neighboring_relation(ClientSampling.FULL) is ADD_REMOVE
  assert accounting.neighboring_relation(
      ClientSampling.FIXED_SIZE) is REPLACE_ONE


def test_round_events_by_sampling():
  kwargs = dict(population=1000, clients_per_round=50, noise_multiplier=1.2)
  assert accounting.gaussian_round_event(
      sampling=ClientSampling.POISSON,
      **kwargs) == dp_event.PoissonSampledDpEvent(0.05,
                                                  dp_event.GaussianDpEvent(1.2))
  # Replace-one moves a C-clipped sum by 2C: the multiplier halves.
  assert accounting.gaussian_round_event(
      sampling=ClientSampling.FIXED_SIZE,
      **kwargs) == dp_event.SampledWithoutReplacementDpEvent(
          1000, 50, dp_event.GaussianDpEvent(0.6))
  assert accounting.gaussian_round_event(
      sampling=ClientSampling.FULL,
      population=7,
      clients_per_round=7,
      noise_multiplier=1.2) == dp_event.GaussianDpEvent(1.2)
  for mode in _DRAWN_BY_CLIENT_SAMPLER:
    n = 7 if mode is ClientSampling.FULL else 3
    assert accounting.gaussian_round_event(
        sampling=mode, population=7, clients_per_round=n,
        noise_multiplier=0.0) == dp_event.NonPrivateDpEvent()


@pytest.mark.parametrize('mode', _DRAWN_BY_CLIENT_SAMPLER)
def test_round_event_for_uses_the_sampler(mode):
  n = 40 if mode is ClientSampling.FULL else 8
  sampler = sampling.ClientSampler(mode,
                                   population=40,
                                   clients_per_round=n,
                                   seed=3)
  assert accounting.round_event_for(
      sampler, noise_multiplier=0.9) == accounting.gaussian_round_event(
          sampling=mode,
          population=40,
          clients_per_round=n,
          noise_multiplier=0.9)


@pytest.mark.parametrize('z', [-1.0, math.nan, math.inf])
def test_bad_noise_multiplier_refused(z):
  with pytest.raises(ValueError, match='noise_multiplier'):
    accounting.gaussian_round_event(sampling=ClientSampling.POISSON,
                                    population=10,
                                    clients_per_round=2,
                                    noise_multiplier=z)


def test_bad_cohort_refused():
  with pytest.raises(ValueError, match='clients_per_round'):
    accounting.gaussian_round_event(sampling=ClientSampling.FULL,
                                    population=10,
                                    clients_per_round=2,
                                    noise_multiplier=1.0)
  with pytest.raises(TypeError):
    accounting.round_event_for('poisson', noise_multiplier=1.0)


# --- Golden values. ----------------------------------------------------------

# TFF tutorial "Differential privacy in TFF" (EMNIST, 3383 clients, 120
# clients per round, Poisson, z = 1.2, 100 rounds, delta 1e-5).
TFF_TUTORIAL_RDP = 1.9861111368236988
TFF_TUTORIAL_PLD_1E4 = 1.7074713239701205  # dp-accounting default grid.
TFF_TUTORIAL_PLD_1E3 = 1.707538720753321  # accounting.PLD_DISCRETIZATION.
# TF Privacy MNIST DP-SGD tutorial (q = 256/60000, z = 1.1, 60 epochs =
# 14063 steps, delta 1e-5).
MNIST_RDP = 2.596655528688368
MNIST_PLD_1E4 = 2.3817788079120428
MNIST_PLD_1E3 = 2.390623427345075


def test_pld_discretization_constant():
  assert accounting.PLD_DISCRETIZATION == 1e-3


@pytest.mark.parametrize('q, z, rounds, golden', [
    (120 / 3383, 1.2, 100,
     (TFF_TUTORIAL_RDP, TFF_TUTORIAL_PLD_1E4, TFF_TUTORIAL_PLD_1E3)),
    (256 / 60000, 1.1, 14063, (MNIST_RDP, MNIST_PLD_1E4, MNIST_PLD_1E3)),
])
def test_golden_epsilons(q, z, rounds, golden):
  gold_rdp, gold_pld_fine, gold_pld = golden
  hand = dp_event.SelfComposedDpEvent(
      dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z)), rounds)
  assert _hand_rdp(hand) == pytest.approx(gold_rdp, rel=GOLDEN_REL)
  assert _hand_pld(hand, 1e-4) == pytest.approx(gold_pld_fine, rel=GOLDEN_REL)
  assert _hand_pld(hand, 1e-3) == pytest.approx(gold_pld, rel=GOLDEN_REL)

  population = 3383 if rounds == 100 else 60000
  ours = _poisson(population, round(q * population), z, rounds)
  assert _eps([ours], RDP) == pytest.approx(gold_rdp, rel=GOLDEN_REL)
  assert _eps([ours], PLD) == pytest.approx(gold_pld, rel=GOLDEN_REL)
  assert _eps([ours], PLD,
              pld_discretization=1e-4) == pytest.approx(gold_pld_fine,
                                                        rel=GOLDEN_REL)
  # The coarse grid is pessimistic: never below the fine one.
  assert gold_pld >= gold_pld_fine


# --- Properties. -------------------------------------------------------------


@pytest.mark.parametrize('q, z',
                         itertools.product([0.001, 0.05, 0.5], [0.7, 2.0]))
def test_pld_not_above_rdp(q, z):
  for rounds in (1, 1000):
    event = _poisson(1000, round(q * 1000), z, rounds)
    assert _eps([event], PLD) <= _eps([event], RDP) * (1 + 1e-9)


@pytest.mark.parametrize('accountant, rounds_grid', [
    (RDP, range(1, 301)),
    (PLD, [1, 2, 3, 10, 50, 200]),
])
def test_epsilon_non_decreasing_in_rounds(accountant, rounds_grid):
  epsilons = [
      _eps([_poisson(1000, 10, 1.0, r)], accountant) for r in rounds_grid
  ]
  assert all(b >= a for a, b in zip(epsilons, epsilons[1:])), epsilons


def test_fixed_size_costs_more_than_poisson_and_matches_hand_built():
  n_pop, n, z, rounds = 3383, 120, 1.2, 100
  fixed = dp_event.SelfComposedDpEvent(
      accounting.gaussian_round_event(sampling=ClientSampling.FIXED_SIZE,
                                      population=n_pop,
                                      clients_per_round=n,
                                      noise_multiplier=z), rounds)
  eps_fixed = _eps([fixed], RDP, relation=REPLACE_ONE)
  hand = dp_event.SelfComposedDpEvent(
      dp_event.SampledWithoutReplacementDpEvent(n_pop, n,
                                                dp_event.GaussianDpEvent(
                                                    z / 2)), rounds)
  assert eps_fixed == pytest.approx(_hand_rdp(hand, REPLACE_ONE), rel=1e-12)
  eps_poisson = _eps([_poisson(n_pop, n, z, rounds)], RDP)
  assert eps_fixed > 2 * eps_poisson


def test_full_participation_is_plain_gaussian_composition():
  z, rounds = 3.0, 50
  ours = [
      accounting.gaussian_round_event(sampling=ClientSampling.FULL,
                                      population=5,
                                      clients_per_round=5,
                                      noise_multiplier=z)
  ] * rounds
  hand = dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(z), rounds)
  assert _eps(ours, RDP) == pytest.approx(_hand_rdp(hand), rel=1e-12)
  # Gaussians compose to a Gaussian of std z / sqrt(rounds): the PLD
  # accountant's epsilon is that mechanism's exact one (dp-accounting's
  # hockey-stick divergence at it is delta), just below the discretized PLD.
  eps = _eps(ours, PLD)
  assert privacy_loss_mechanism.GaussianPrivacyLoss(
      z / math.sqrt(rounds)).get_delta_for_epsilon(eps) == pytest.approx(
          DELTA, rel=1e-6)
  assert eps <= _hand_pld(hand, accounting.PLD_DISCRETIZATION) <= eps + 1e-3


@pytest.mark.parametrize('accountant', list(AccountantKind))
def test_zero_noise_is_infinite_epsilon(accountant):
  event = accounting.gaussian_round_event(sampling=ClientSampling.POISSON,
                                          population=100,
                                          clients_per_round=10,
                                          noise_multiplier=0.0)
  assert _eps([_poisson(100, 10, 1.0, 5).event, event], accountant) == math.inf
  assert _eps([], accountant) == 0.0


def test_identical_events_composed_in_any_order():
  a = _poisson(1000, 10, 2.0).event
  b = _poisson(1000, 30, 3.0).event
  events = [a, b, a, a, b]
  acc = rdp.RdpAccountant()
  for e in events:
    acc.compose(e)
  assert _eps(events, RDP) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-12)
  acc = pld.PLDAccountant(
      value_discretization_interval=accounting.PLD_DISCRETIZATION)
  for e in events:
    acc.compose(e)
  assert _eps(events, PLD) == pytest.approx(acc.get_epsilon(DELTA), rel=1e-3)


# --- Adaptive clipping (Andrew et al. 2021). ---------------------------------


def _tff_adaptive_split(z, clients_per_round):
  # tff.aggregators.differential_privacy.adaptive_clip_noise_params (v0.87).
  sigma_b = 0.05 * clients_per_round
  z_value = (z**-2 - (2 * sigma_b)**-2)**-0.5
  return z_value, sigma_b


def test_adaptive_clipping_is_one_gaussian_with_nominal_z():
  n_pop, n, z = 3383, 120, 1.2
  z_value, sigma_b = _tff_adaptive_split(z, n)
  # Add/remove: value sensitivity C (mult z_v), count records +-1/2 (mult
  # sigma_b / (1/2)). TF Privacy emits this ComposedDpEvent.
  poisson_parts = dp_event.PoissonSampledDpEvent(
      n / n_pop,
      dp_event.ComposedDpEvent([
          dp_event.GaussianDpEvent(z_value),
          dp_event.GaussianDpEvent(2 * sigma_b)
      ]))
  ours = _poisson(n_pop, n, z).event
  np.testing.assert_allclose(rdp.RdpAccountant().compose(poisson_parts).rdp,
                             rdp.RdpAccountant().compose(ours).rdp,
                             rtol=1e-9)
  # Replace-one: value sensitivity 2C (mult z_v / 2), count record moves from
  # -1/2 to +1/2, sensitivity 1 (mult sigma_b).
  wor_parts = dp_event.SampledWithoutReplacementDpEvent(
      n_pop, n,
      dp_event.ComposedDpEvent([
          dp_event.GaussianDpEvent(z_value / 2),
          dp_event.GaussianDpEvent(sigma_b)
      ]))
  ours = accounting.gaussian_round_event(sampling=ClientSampling.FIXED_SIZE,
                                         population=n_pop,
                                         clients_per_round=n,
                                         noise_multiplier=z)
  assert ours.event.noise_multiplier == z / 2
  relation = REPLACE_ONE
  np.testing.assert_allclose(
      rdp.RdpAccountant(neighboring_relation=relation).compose(wor_parts).rdp,
      rdp.RdpAccountant(neighboring_relation=relation).compose(ours).rdp,
      rtol=1e-9)
  # Without sampling, composing the two parts separately (RDP adds) equals a
  # single Gaussian with z / 2.
  separate = rdp.RdpAccountant(neighboring_relation=relation)
  separate.compose(dp_event.GaussianDpEvent(z_value / 2))
  separate.compose(dp_event.GaussianDpEvent(sigma_b))
  np.testing.assert_allclose(separate.rdp,
                             rdp.RdpAccountant().compose(
                                 dp_event.GaussianDpEvent(z / 2)).rdp,
                             rtol=1e-9)


# --- Unsupported combinations. -----------------------------------------------


@pytest.mark.parametrize(
    'event, accountant, relation',
    [
        # Under replace-one PLD composes it without amplification
        # (test_accounting_bounds.py); under add/remove no bound applies.
        (dp_event.SampledWithoutReplacementDpEvent(
            100, 10, dp_event.GaussianDpEvent(1.0)), PLD, ADD_REMOVE),
        (dp_event.PoissonSampledDpEvent(
            0.1, dp_event.ComposedDpEvent([dp_event.GaussianDpEvent(1.0)
                                          ])), PLD, ADD_REMOVE),
        (dp_event.PoissonSampledDpEvent(
            0.1, dp_event.LaplaceDpEvent(1.0)), RDP, ADD_REMOVE),
        (dp_event.SingleEpochTreeAggregationDpEvent(
            1.0, 4), PLD, Relation.REPLACE_SPECIAL),
        (dp_event.SingleEpochTreeAggregationDpEvent(1.0, 4), RDP, ADD_REMOVE),
        (dp_event.PoissonSampledDpEvent(
            0.1, dp_event.GaussianDpEvent(1.0)), RDP, REPLACE_ONE),
        (dp_event.UnsupportedDpEvent(), RDP, ADD_REMOVE),
    ])
def test_unsupported_combinations_raise(event, accountant, relation):
  with pytest.raises(accounting.UnsupportedAccountingError) as info:
    _eps([event], accountant, relation=relation)
  assert accountant.name in str(info.value)
  assert type(event).__name__ in str(info.value)
  assert isinstance(info.value, dp_accounting.UnsupportedEventError)


@pytest.mark.parametrize('kwargs', [
    dict(delta=0.0),
    dict(delta=1.0),
    dict(delta=math.nan),
])
def test_bad_delta_refused(kwargs):
  with pytest.raises(ValueError, match='delta'):
    accounting.compute_epsilon([],
                               accountant=RDP,
                               relation=ADD_REMOVE,
                               **kwargs)


def test_bad_accountant_and_counts_refused():
  with pytest.raises(TypeError):
    _eps([dp_event.GaussianDpEvent(1.0)], 'rdp')
  with pytest.raises(ValueError, match='count'):
    _eps([dp_event.SelfComposedDpEvent(dp_event.GaussianDpEvent(1.0), 0)], RDP)


# --- Calibration. ------------------------------------------------------------

_COHORT = dict(sampling=ClientSampling.POISSON,
               population=3383,
               clients_per_round=120)


@pytest.mark.parametrize('accountant', list(AccountantKind))
def test_calibrated_noise_never_overshoots(accountant):
  target, rounds = 2.0, 100
  z = calibration.calibrate_noise_multiplier(target_epsilon=target,
                                             delta=DELTA,
                                             rounds=rounds,
                                             accountant=accountant,
                                             **_COHORT)
  assert _eps([_poisson(3383, 120, z, rounds)], accountant) <= target
  assert _eps([_poisson(3383, 120, z * (1 - 1e-3), rounds)],
              accountant) > target
  # The TFF tutorial's z = 1.2 gives epsilon just under 2 by RDP.
  if accountant is RDP:
    assert 1.1 < z < 1.2


@pytest.mark.parametrize('accountant', list(AccountantKind))
def test_calibrated_rounds_boundary(accountant):
  target, z = 2.0, 1.2
  rounds = calibration.calibrate_rounds(target_epsilon=target,
                                        delta=DELTA,
                                        noise_multiplier=z,
                                        accountant=accountant,
                                        **_COHORT)
  assert _eps([_poisson(3383, 120, z, rounds)], accountant) <= target
  assert _eps([_poisson(3383, 120, z, rounds + 1)], accountant) > target
  if accountant is RDP:
    assert rounds == 101


def test_calibrated_rounds_zero_when_one_round_is_too_much():
  kwargs = dict(delta=DELTA, accountant=RDP, **_COHORT)
  assert calibration.calibrate_rounds(target_epsilon=1e-3,
                                      noise_multiplier=1.0,
                                      **kwargs) == 0
  assert calibration.calibrate_rounds(target_epsilon=10.0,
                                      noise_multiplier=0.0,
                                      **kwargs) == 0


# --- Ledger. -----------------------------------------------------------------


def _ledger(rounds, sampler=None, z=1.0):
  sampler = sampler or sampling.ClientSampler(
      ClientSampling.POISSON, population=1000, clients_per_round=20, seed=0)
  return ledgers.of_rounds(
      accounting.round_event_for(sampler, noise_multiplier=z), rounds,
      accounting.neighboring_relation(sampler.sampling))


@pytest.mark.parametrize('accountant', list(AccountantKind))
def test_ledger_epsilon_and_epsilon_with(accountant):
  ledger = _ledger(10)
  assert ledger.rounds == 10
  assert ledger.relation is ADD_REMOVE
  event = _poisson(1000, 20, 1.0).event
  assert ledger.events == [event] * 10
  assert ledger.epsilon(delta=DELTA, accountant=accountant) == pytest.approx(
      _eps([_poisson(1000, 20, 1.0, 10)], accountant), rel=1e-12)
  before = ledger.epsilon_with(event, delta=DELTA, accountant=accountant)
  ledger.record(11, event)
  assert ledger.epsilon(delta=DELTA, accountant=accountant) == before


def test_ledger_refuses_non_consecutive_rounds():
  ledger = privacy_ledger.PrivacyLedger(ADD_REMOVE)
  event = _poisson(100, 10, 1.0).event
  for bad in (0, 2):
    with pytest.raises(ValueError, match='Expected round 1'):
      ledger.record(bad, event)
  ledger.record(1, event)
  with pytest.raises(ValueError, match='Expected round 2'):
    ledger.record(1, event)  # A retried round is a new round.
  with pytest.raises(TypeError):
    ledger.record(True, event)


def test_ledger_refuses_events_of_another_relation():
  fixed = accounting.gaussian_round_event(sampling=ClientSampling.FIXED_SIZE,
                                          population=100,
                                          clients_per_round=10,
                                          noise_multiplier=1.0)
  with pytest.raises(accounting.UnsupportedAccountingError, match='sampler'):
    privacy_ledger.PrivacyLedger(ADD_REMOVE).record(1, fixed)
  with pytest.raises(accounting.UnsupportedAccountingError):
    privacy_ledger.PrivacyLedger(REPLACE_ONE).record(1,
                                                     _poisson(100, 10, 1).event)
  with pytest.raises(accounting.UnsupportedAccountingError):
    privacy_ledger.PrivacyLedger(ADD_REMOVE).epsilon_with(fixed,
                                                          delta=DELTA,
                                                          accountant=RDP)


def test_ledger_save_load_round_trip(tmp_path):
  sampler = sampling.ClientSampler(ClientSampling.FIXED_SIZE, 500, 25, seed=1)
  ledger = _ledger(30, sampler, z=2.0)
  path = tmp_path / 'ledger.json'
  ledger.save(path)
  ledger.save(path)  # Overwrites atomically.
  assert os.listdir(tmp_path) == ['ledger.json']  # No temp files left.
  raw = json.loads(path.read_text())
  assert raw['format_version'] == 1
  assert raw['neighboring_relation'] == 'REPLACE_ONE'
  assert raw['rounds'][0] == {
      'round': 1,
      'event': {
          'name': 'SampledWithoutReplacementDpEvent',
          'source_dataset_size': 500,
          'sample_size': 25,
          'event': {
              'name': 'GaussianDpEvent',
              'noise_multiplier': 1.0
          }
      }
  }
  loaded = privacy_ledger.PrivacyLedger.load(path)
  assert loaded.events == ledger.events
  assert loaded.relation is ledger.relation
  assert loaded.epsilon(delta=DELTA,
                        accountant=RDP) == ledger.epsilon(delta=DELTA,
                                                          accountant=RDP)


# One instance of every dp_accounting event class, to show that ledgers take
# future mechanisms (local DP, tree aggregation, DP-SGD, ...) unchanged.
_ALL_EVENTS = [
    dp_event.NoOpDpEvent(),
    dp_event.NonPrivateDpEvent(),
    dp_event.UnsupportedDpEvent(),
    dp_event.GaussianDpEvent(0.5),
    dp_event.LaplaceDpEvent(2.0),
    dp_event.SelfComposedDpEvent(dp_event.LaplaceDpEvent(1.0), 3),
    dp_event.ComposedDpEvent(
        [dp_event.GaussianDpEvent(1.0),
         dp_event.NoOpDpEvent()]),
    dp_event.PoissonSampledDpEvent(0.1, dp_event.LaplaceDpEvent(1.0)),
    dp_event.SampledWithReplacementDpEvent(100, 5,
                                           dp_event.GaussianDpEvent(1.0)),
    dp_event.SampledWithoutReplacementDpEvent(100, 5,
                                              dp_event.GaussianDpEvent(1.0)),
    dp_event.SingleEpochTreeAggregationDpEvent(1.5, [3, 4]),
    dp_event.SingleEpochTreeAggregationDpEvent(1.5, 7),
    dp_event.RepeatAndSelectDpEvent(dp_event.GaussianDpEvent(1.0), 2.0, 1.0),
]


def test_every_event_class_is_covered():
  covered = {type(e).__name__ for e in _ALL_EVENTS}
  # pylint: disable-next=protected-access
  assert covered == set(dp_event_json.EVENT_CLASSES)


@pytest.mark.parametrize('event', _ALL_EVENTS, ids=lambda e: type(e).__name__)
def test_event_json_round_trip(event):
  text = json.dumps(accounting.event_to_json(event), allow_nan=False)
  assert accounting.event_from_json(json.loads(text)) == event


def test_ledger_for_tree_aggregation_and_local_dp():
  tree = privacy_ledger.PrivacyLedger(Relation.REPLACE_SPECIAL)
  for r in range(1, 4):
    tree.record(r, dp_event.SingleEpochTreeAggregationDpEvent(2.0, [r]))
  tree = privacy_ledger.PrivacyLedger.from_json(
      json.loads(json.dumps(tree.to_json())))
  assert 0 < tree.epsilon(delta=DELTA, accountant=RDP) < math.inf
  local = privacy_ledger.PrivacyLedger(ADD_REMOVE)
  local.record(1, dp_event.SelfComposedDpEvent(dp_event.LaplaceDpEvent(4.), 3))
  assert local.epsilon(delta=DELTA, accountant=PLD) == pytest.approx(
      0.75, rel=1e-2)  # Pure DP: 3 participations x 1 / 4.


def _valid_json():
  return _ledger(2).to_json()


def _mutate(path, value):
  return json_edits.edited(_valid_json(), path, value)


@pytest.mark.parametrize('d, message', [
    ([], 'JSON object'),
    (_mutate(['format_version'], 2), 'format_version'),
    (_mutate(['format_version'], True), 'format_version'),
    (_mutate(['neighboring_relation'], 'ADD_ONE'), 'neighboring_relation'),
    (_mutate(['neighboring_relation'], []), 'neighboring_relation'),
    (_mutate(['neighboring_relation'], 'REPLACE_ONE'), 'REPLACE_ONE'),
    (_mutate(['extra'], 1), 'keys'),
    (_mutate(['rounds'], {}), 'list'),
    (_mutate(['rounds', 1, 'round'], 3), 'Expected round 2'),
    (_mutate(['rounds', 0, 'round'], '1'), 'round'),
    (_mutate(['rounds', 0, 'event', 'name'], 'PickleDpEvent'), 'PickleDpEvent'),
    (_mutate(['rounds', 0, 'event', 'event', 'name'],
             'os.system'), 'os.system'),
    (_mutate(['rounds', 0, 'event', 'sampling_probability'],
             json_edits.DELETE), 'missing field'),
    (_mutate(['rounds', 0, 'event', 'bogus'], 1), 'bogus'),
    (_mutate(['rounds', 0, 'event', 'sampling_probability'], 'x'), 'invalid'),
    (_mutate(['rounds', 0, 'event', 'event', 'noise_multiplier'],
             True), 'invalid'),
])
def test_from_json_refuses_malformed(d, message):
  with pytest.raises(accounting.LedgerFormatError, match=message):
    privacy_ledger.PrivacyLedger.from_json(d)


def test_load_errors_name_the_file(tmp_path):
  missing = tmp_path / 'missing.json'
  with pytest.raises(FileNotFoundError, match='missing.json'):
    privacy_ledger.PrivacyLedger.load(missing)
  for name, text in [
      ('truncated.json', json.dumps(_valid_json())[:-5]),
      ('nan.json', json.dumps(_valid_json()).replace('1.0', 'NaN')),
      ('unknown.json',
       json.dumps(_valid_json()).replace('GaussianDpEvent', 'EvilDpEvent')),
      ('binary.json', '\udcff')
  ]:
    path = tmp_path / name
    path.write_bytes(text.encode('utf-8', 'surrogateescape'))
    with pytest.raises(accounting.LedgerFormatError, match=name):
      privacy_ledger.PrivacyLedger.load(path)


def test_unknown_event_class_not_serializable():

  class MyGaussian(dp_event.GaussianDpEvent):
    pass

  with pytest.raises(TypeError, match='MyGaussian'):
    privacy_ledger.PrivacyLedger(ADD_REMOVE).record(1, MyGaussian(1.0))
  with pytest.raises(ValueError, match='finite'):
    privacy_ledger.PrivacyLedger(ADD_REMOVE).record(
        1, dp_event.GaussianDpEvent(math.nan))


# --- Performance sanity (real targets: see the report / benchmarks). ---------


@pytest.mark.parametrize('accountant', list(AccountantKind))
def test_thousand_round_ledger_is_fast(accountant):
  ledger = _ledger(1000, z=1.2)
  start = time.perf_counter()
  ledger.epsilon(delta=DELTA, accountant=accountant)
  assert time.perf_counter() - start < 5.0  # Measured ~0.05-0.07 s.


@pytest.mark.parametrize('q,z,rounds', [(0.1, 1.0, 1), (0.1, 1.0, 700),
                                        (0.035, 1.2, 100), (0.5, 0.8, 13)])
def test_pld_with_cached_round_distribution_equals_the_accountant(q, z, rounds):
  # compute_epsilon reuses one round's PLD across calls; the result must be
  # dp-accounting's own, to the last bit.
  event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))
  reference = pld.PLDAccountant(
      value_discretization_interval=accounting.PLD_DISCRETIZATION)
  reference.compose(event, rounds)
  for _ in range(2):  # Second call: from the cache.
    assert accounting.compute_epsilon(
        [event] * rounds,
        delta=1e-5,
        accountant=accounting.AccountantKind.PLD,
        relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE) == (
            reference.get_epsilon(1e-5))


def test_pld_mixing_cached_and_accountant_events_stays_close():
  sampled = dp_event.PoissonSampledDpEvent(0.1, dp_event.GaussianDpEvent(1.0))
  plain = dp_event.GaussianDpEvent(5.0)
  reference = pld.PLDAccountant(
      value_discretization_interval=accounting.PLD_DISCRETIZATION)
  reference.compose(plain, 3)
  reference.compose(sampled, 50)
  assert accounting.compute_epsilon([sampled] * 50 + [plain] * 3,
                                    delta=1e-5,
                                    accountant=accounting.AccountantKind.PLD,
                                    relation=dp_accounting.NeighboringRelation.
                                    ADD_OR_REMOVE_ONE) == pytest.approx(
                                        reference.get_epsilon(1e-5), rel=1e-9)

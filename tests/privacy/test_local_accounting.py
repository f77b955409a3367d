"""Tests for tff_dp.privacy.local_accounting (pure Python, no TensorFlow).

Reference values are computed here from hand-built dp_accounting events and,
where one exists, from a closed form that does not use dp-accounting at all:
the single Laplace mechanism's privacy profile and the analytic Gaussian
mechanism (Balle, Wang 2018). Golden literals were computed with dp-accounting
0.4.3; their tolerance only absorbs floating-point differences.
"""

import json
import math
import re

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting import rdp
import pytest
from scipy import optimize
from scipy import stats

from tests.helpers import fresh_imports
from tests.helpers import json_edits
from tff_dp.privacy import accounting
from tff_dp.privacy import local_accounting

LAPLACE = local_accounting.LocalMechanism.LAPLACE
GAUSSIAN = local_accounting.LocalMechanism.GAUSSIAN
RDP, PLD = accounting.AccountantKind.RDP, accounting.AccountantKind.PLD
REPLACE_ONE = dp_accounting.NeighboringRelation.REPLACE_ONE
ADD_REMOVE = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
DELTA = 1e-6


def _laplace(epsilon):
  return local_accounting.LocalMechanismSpec(LAPLACE, epsilon_local=epsilon)


def _gaussian(z):
  return local_accounting.LocalMechanismSpec(GAUSSIAN, noise_multiplier=z)


def _hand(kind, event, k, relation=REPLACE_ONE, delta=DELTA):
  if kind is RDP:
    acc = rdp.RdpAccountant(neighboring_relation=relation)
  else:
    acc = pld.PLDAccountant(
        neighboring_relation=relation,
        value_discretization_interval=accounting.PLD_DISCRETIZATION)
  return acc.compose(event, k).get_epsilon(delta)


def test_module_does_not_import_tensorflow():
  assert fresh_imports.heavy_imports('tff_dp.privacy.local_accounting') == []


# --- One participation. ------------------------------------------------------


def test_events_and_noise_scales():
  # Laplace: b = Delta_1 / epsilon with Delta_1 = 2 C (any two inputs of a
  # client are neighbours), and dp-accounting's multiplier is b / Delta_1.
  spec = _laplace(0.5)
  assert spec.noise_scale(clip=3.0) == pytest.approx(2 * 3.0 / 0.5)
  assert spec.participation_event() == dp_event.LaplaceDpEvent(2.0)
  # Gaussian: std z C, L2 sensitivity 2 C, multiplier z / 2.
  spec = _gaussian(1.5)
  assert spec.noise_scale(clip=3.0) == pytest.approx(4.5)
  assert spec.participation_event() == dp_event.GaussianDpEvent(0.75)


@pytest.mark.parametrize('kwargs,name', [
    (dict(mechanism='laplace', epsilon_local=1.0), 'mechanism'),
    (dict(mechanism=LAPLACE), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=math.inf), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=math.nan), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=True), 'epsilon_local'),
    (dict(mechanism=LAPLACE, epsilon_local=1.0,
          noise_multiplier=2.0), 'noise_multiplier'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=0.0), 'noise_multiplier'),
    (dict(mechanism=GAUSSIAN, noise_multiplier=1.0,
          epsilon_local=1.0), 'epsilon_local'),
])
def test_spec_refuses_bad_arguments(kwargs, name):
  with pytest.raises(ValueError, match=name):
    local_accounting.LocalMechanismSpec(**kwargs)


def test_single_laplace_matches_closed_form():
  # One Laplace mechanism with epsilon = Delta/b has the privacy profile
  # delta(e) = 1 - exp((e - epsilon) / 2) for 0 <= e <= epsilon, i.e.
  # epsilon(delta) = epsilon + 2 log(1 - delta). This pins the event's
  # multiplier (1 / epsilon) independently of dp-accounting's conventions.
  epsilon, delta = 0.8, 1e-3
  g = _laplace(epsilon).guarantee(1, delta=delta)
  exact = epsilon + 2 * math.log1p(-delta)
  assert exact <= g.epsilons[PLD] <= exact + 2e-3  # Pessimistic grid 1e-3.
  assert g.pure_epsilon == epsilon
  assert g.epsilon == g.epsilons[PLD]


def _analytic_gaussian_epsilon(mu, delta):
  # Balle, Wang 2018, Thm. 8: delta(e) = Phi(-e/mu + mu/2)
  # - exp(e) Phi(-e/mu - mu/2), for sensitivity / std = mu.
  # (e^e Phi(.) in log space: it overflows for e in the thousands.)
  def delta_of(e):
    return (stats.norm.cdf(-e / mu + mu / 2) -
            math.exp(e + stats.norm.logcdf(-e / mu - mu / 2)))

  return optimize.brentq(lambda e: delta_of(e) - delta,
                         0.0,
                         1e3 + mu * mu,
                         xtol=1e-12,
                         rtol=1e-14)


# --- Composition over a client's participations. -----------------------------


def test_small_local_gaussian_noise_is_accounted_exactly():
  # z = 0.05 is the client_server preset's local noise: dp-accounting's grid
  # would need ~10^7 points per participation (minutes and gigabytes per
  # round); the Gaussian composition needs none.
  z, k = 0.05, 100
  g = _gaussian(z).guarantee(k, delta=DELTA)
  exact = _analytic_gaussian_epsilon(2 * math.sqrt(k) / z, DELTA)
  assert exact > 1e4
  assert g.epsilons[PLD] == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize('k', [1, 7, 60])
def test_laplace_composition(k):
  epsilon = 0.5
  g = _laplace(epsilon).guarantee(k, delta=DELTA)
  event = dp_event.LaplaceDpEvent(1 / epsilon)
  assert g.pure_epsilon == pytest.approx(k * epsilon)  # Basic composition.
  assert g.epsilons[RDP] == pytest.approx(_hand(RDP, event, k), rel=1e-9)
  assert g.epsilons[PLD] == pytest.approx(_hand(PLD, event, k), rel=1e-9)
  assert g.epsilon == min(g.pure_epsilon, g.epsilons[RDP], g.epsilons[PLD])
  if k == 60:  # Many participations: the PLD beats k * epsilon.
    assert g.epsilons[PLD] < 0.9 * g.pure_epsilon and g.source == 'pld'


@pytest.mark.parametrize('k', [1, 10, 200])
def test_gaussian_composition(k):
  z = 4.0
  g = _gaussian(z).guarantee(k, delta=DELTA)
  event = dp_event.GaussianDpEvent(z / 2)
  assert g.pure_epsilon == math.inf
  assert g.epsilons[RDP] == pytest.approx(_hand(RDP, event, k), rel=1e-9)
  # k Gaussians with sensitivity/std 2/z compose to one with 2 sqrt(k) / z,
  # which the PLD accountant evaluates exactly (no grid); dp-accounting's
  # discretized PLD bounds it from above.
  exact = _analytic_gaussian_epsilon(2 * math.sqrt(k) / z, DELTA)
  assert g.epsilons[PLD] == pytest.approx(exact, rel=1e-9)
  assert g.epsilons[PLD] <= _hand(PLD, event, k) <= exact * 1.01 + 1e-3
  assert exact <= g.epsilons[RDP]
  assert g.epsilon == g.epsilons[PLD] and g.source == 'pld'


def test_golden_values():
  g = _laplace(0.5).guarantee(40, delta=DELTA)
  assert g.epsilons[RDP] == pytest.approx(20.00575222599476, rel=1e-6)
  assert g.epsilons[PLD] == pytest.approx(16.035311488329402, rel=1e-6)
  g = _gaussian(4.0).guarantee(40, delta=DELTA)
  assert g.epsilons[RDP] == pytest.approx(20.551991629803823, rel=1e-6)
  assert g.epsilons[PLD] == pytest.approx(19.423656753835793, rel=1e-6)


@pytest.mark.parametrize(
    'event', [dp_event.LaplaceDpEvent(2.0),
              dp_event.GaussianDpEvent(1.5)])
def test_unsampled_events_do_not_depend_on_the_relation(event):
  # dp-accounting 0.4.3 composes these under every relation, with the same
  # result: the relation only matters for sampled events.
  for kind in (RDP, PLD):
    assert _hand(kind, event, 5, REPLACE_ONE) == _hand(kind, event, 5,
                                                       ADD_REMOVE)


def test_concentrated_laplace_shift_dominates_split_shifts():
  # The PLD accountant's Laplace pair is one-dimensional. Our updates are not:
  # a pair of inputs at L1 distance Delta may split it across coordinates. The
  # split pair must never have a larger delta(e) than the concentrated one.
  # (Composition preserves domination, so two coordinates suffice.)
  def profile(*shifts):
    plds = [
        pld.privacy_loss_distribution.from_laplace_mechanism(
            parameter=1.0, sensitivity=s, value_discretization_interval=1e-3)
        for s in shifts
    ]
    out = plds[0]
    for other in plds[1:]:
      out = out.compose(other)
    return out

  for total in (0.5, 2.0):
    concentrated = profile(total)
    for fraction in (0.2, 0.5):
      split = profile(total * fraction, total * (1 - fraction))
      for i in range(11):
        e = total * i / 10
        # 2e-4 absorbs the two pessimistic discretizations (grid 1e-3); the
        # concentrated pair wins by >= 0.01 wherever delta > 0.
        assert split.get_delta_for_epsilon(e) <= (
            concentrated.get_delta_for_epsilon(e) + 2e-4), (total, fraction, e)


# --- The ledger. -------------------------------------------------------------


def _ledger(spec=None, population=10):
  return local_accounting.LocalPrivacyLedger(spec or _laplace(1.0),
                                             population=population)


def test_ledger_counts_and_worst_case_client():
  ledger = _ledger()
  assert ledger.max_participations() == 0
  assert ledger.guarantee(delta=DELTA).epsilon == 0.0
  ledger.record_round(1, [0, 1])
  ledger.record_round(2, [])  # An empty Poisson cohort is still a round.
  ledger.record_round(3, [2, 1])
  ledger.record_round(4, [1, 9])
  assert ledger.rounds == 4 and ledger.cohort(3) == [1, 2]
  assert ledger.participation_counts == {0: 1, 1: 3, 2: 1, 9: 1}
  assert ledger.max_participations() == 3
  assert ledger.worst_case_clients() == [1]
  g = ledger.guarantee(delta=DELTA)
  assert g.participations == 3 and g.pure_epsilon == 3.0
  assert g == ledger.spec.guarantee(3, delta=DELTA)
  # Budget check before a round: client 1 would reach 4, client 5 only 1.
  assert ledger.guarantee(delta=DELTA,
                          next_round_clients=[5]).participations == 3
  assert ledger.guarantee(delta=DELTA,
                          next_round_clients=[1, 5]).pure_epsilon == 4.0
  assert ledger.max_participations() == 3  # Not recorded.
  one = ledger.participation_guarantee(delta=DELTA)
  assert one.pure_epsilon == 1.0 and one.participations == 1


@pytest.mark.parametrize(
    'round_num,clients,error',
    [
        (2, [0], ValueError),  # Not the next round.
        (1, [0, 0], ValueError),  # Duplicate.
        (1, [10], ValueError),  # Outside the population.
        (1, [-1], ValueError),
        (1, [1.0], TypeError),
        (1, [True], TypeError),
        ('1', [0], TypeError),
    ])
def test_ledger_refuses_bad_rounds(round_num, clients, error):
  ledger = _ledger()
  with pytest.raises(error):
    ledger.record_round(round_num, clients)
  assert ledger.rounds == 0


@pytest.mark.parametrize('spec', [_laplace(0.7), _gaussian(3.0)])
def test_ledger_json_round_trip(tmp_path, spec):
  ledger = _ledger(spec, population=50)
  ledger.record_round(1, [3, 17, 4])
  ledger.record_round(2, [])
  ledger.record_round(3, [17])
  path = tmp_path / 'local_ledger.json'
  ledger.save(str(path))
  text = path.read_text()
  assert json.loads(text) == ledger.to_json()  # Plain JSON.
  assert [p.name for p in tmp_path.iterdir()] == ['local_ledger.json']
  loaded = local_accounting.LocalPrivacyLedger.load(str(path))
  assert loaded.to_json() == ledger.to_json()
  assert loaded.spec == spec and loaded.population == 50
  assert loaded.participation_counts == {3: 1, 4: 1, 17: 2}
  assert loaded.guarantee(delta=DELTA) == ledger.guarantee(delta=DELTA)


def _saved(tmp_path, mutate):
  """A ledger's JSON, changed by `mutate` (to a document or text), saved."""
  ledger = _ledger()
  ledger.record_round(1, [0, 1])
  ledger.record_round(2, [1])
  changed = mutate(ledger.to_json())
  path = tmp_path / 'ledger.json'
  path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
  return str(path)


def _set(key, value):
  return lambda d: json_edits.edited(d, [key], value)


@pytest.mark.parametrize(
    'mutate',
    [
        lambda d: json.dumps(d)[:-10],  # Truncated.
        lambda d: json.dumps(d).replace('1.0', 'NaN'),
        _set('format_version', 2),
        _set('neighboring_relation', 'ADD_OR_REMOVE_ONE'),
        _set('mechanism', 'exponential'),
        _set('epsilon_local', -1.0),
        _set('population', 1),  # Client 1 is then outside the population.
        _set('participation_counts', {
            '0': 1,
            '1': 1
        }),  # Disagrees with rounds.
        _set('rounds', [{
            'round': 1,
            'clients': [0, 1]
        }, {
            'round': 3,
            'clients': [1]
        }]),
        _set('rounds', {'round': 1}),
        _set('population', json_edits.DELETE),
    ])
def test_corrupt_ledger_is_refused_naming_the_file(tmp_path, mutate):
  path = _saved(tmp_path, mutate)
  with pytest.raises(accounting.LedgerFormatError, match=re.escape(path)):
    local_accounting.LocalPrivacyLedger.load(path)


def test_missing_ledger_names_the_file(tmp_path):
  path = str(tmp_path / 'absent.json')
  with pytest.raises(FileNotFoundError, match=re.escape(path)):
    local_accounting.LocalPrivacyLedger.load(path)

"""Tests for tff_dp.privacy.example_accounting (record-level epsilon per silo).

Expected epsilons are computed here from hand-built dp_accounting events, with
each silo's own sampling rate q_k = B / n_k and its own step count
local_steps * participations; the module must agree with them. The TF Privacy
MNIST golden values are the ones pinned in tests/privacy/test_accounting.py
(dp-accounting 0.4.3).
"""

import json
import math
import os

from dp_accounting import dp_event
from dp_accounting import pld
from dp_accounting import rdp
import pytest

from tests.helpers import fresh_imports
from tests.helpers import json_edits
from tff_dp.privacy import accounting
from tff_dp.privacy import example_accounting

RDP, PLD = accounting.AccountantKind.RDP, accounting.AccountantKind.PLD
DELTA = 1e-5
REL = 1e-9


def _settings(noise_multiplier=1.1, expected_batch_size=64, local_steps=10):
  return example_accounting.ExampleDpSettings(
      noise_multiplier=noise_multiplier,
      expected_batch_size=expected_batch_size,
      local_steps=local_steps)


def _hand(event, steps, accountant):
  if accountant is RDP:
    acc = rdp.RdpAccountant()
  else:
    acc = pld.PLDAccountant(
        value_discretization_interval=accounting.PLD_DISCRETIZATION)
  return acc.compose(event, steps).get_epsilon(DELTA)


def _sampled(q, z=1.1):
  return dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(z))


def test_module_does_not_import_tensorflow():
  assert fresh_imports.heavy_imports('tff_dp.privacy.example_accounting') == []


def test_step_events():
  settings = _settings(expected_batch_size=64)
  assert example_accounting.step_event(num_examples=6400,
                                       settings=settings) == _sampled(0.01)
  # n_k <= B: every record in every batch, no amplification.
  for n in (64, 10):
    assert example_accounting.step_event(
        num_examples=n, settings=settings) == dp_event.GaussianDpEvent(1.1)
  assert isinstance(
      example_accounting.step_event(num_examples=6400,
                                    settings=_settings(noise_multiplier=0)),
      dp_event.NonPrivateDpEvent)


@pytest.mark.parametrize('accountant', [RDP, PLD])
def test_rate_one_is_the_plain_gaussian(accountant):
  # Why GaussianDpEvent for q_k = 1 changes nothing: both accountants treat
  # Poisson sampling with q = 1 as the unsampled mechanism.
  plain = _hand(dp_event.GaussianDpEvent(1.1), 20, accountant)
  assert _hand(_sampled(1.0), 20, accountant) == pytest.approx(plain, rel=1e-6)


def _three_silos():
  ledger = example_accounting.SiloLedger(settings=_settings(),
                                         num_examples=[6400, 1000, 50])
  ledger.record_round(1, [0, 1, 2])
  ledger.record_round(2, [0, 2])
  ledger.record_round(3, [0])
  return ledger


def test_silo_epsilons_match_dp_accounting_by_hand():
  ledger = _three_silos()
  assert ledger.participations == (3, 1, 2)
  report = ledger.report(delta=DELTA)
  # (event of one step, steps) per silo, built by hand: q_k = 64 / n_k.
  expected = [(_sampled(64 / 6400), 30), (_sampled(64 / 1000), 10),
              (dp_event.GaussianDpEvent(1.1), 20)]
  for silo, (event, steps) in zip(report.silos, expected):
    assert silo.steps == steps
    assert silo.epsilons[RDP] == pytest.approx(_hand(event, steps, RDP),
                                               rel=REL)
    # Unsampled Gaussian steps (the q = 1 silo) are composed exactly, just
    # below dp-accounting's discretized PLD.
    exact = isinstance(event, dp_event.GaussianDpEvent)
    assert silo.epsilons[PLD] == pytest.approx(_hand(event, steps, PLD),
                                               rel=1e-6 if exact else REL)
    assert silo.guarantee == (PLD, silo.epsilons[PLD])
  assert [s.sampling_rate for s in report.silos] == [0.01, 0.064, 1.0]
  worst_by = report.worst_by_accountant()
  for kind in (RDP, PLD):
    assert worst_by[kind] == max(s.epsilons[kind] for s in report.silos)
  # The small silo (no amplification) is the worst despite fewer steps.
  assert report.worst().silo == 2
  assert report.worst_epsilon() == report.silos[2].epsilons[PLD]


def test_mnist_golden_as_one_silo():
  # TF Privacy's MNIST tutorial is one silo: n = 60000, B = 256, 14063 steps.
  ledger = example_accounting.SiloLedger(settings=_settings(
      expected_batch_size=256, local_steps=14063),
                                         num_examples=[60000])
  ledger.record_round(1, [0])
  silo = ledger.report(delta=DELTA).silos[0]
  assert silo.epsilons[RDP] == pytest.approx(2.596655528688368, rel=1e-5)
  assert silo.epsilons[PLD] == pytest.approx(2.390623427345075, rel=1e-5)


def test_no_participation_costs_nothing_and_zero_noise_is_infinite():
  ledger = example_accounting.SiloLedger(settings=_settings(),
                                         num_examples=[100, 200])
  ledger.record_round(1, [1])
  report = ledger.report(delta=1e-3, accountants=[RDP])
  assert report.silos[0].epsilons == {RDP: 0.0}
  assert report.silos[1].epsilons[RDP] > 0
  open_ledger = example_accounting.SiloLedger(
      settings=_settings(noise_multiplier=0), num_examples=[100])
  open_ledger.record_round(1, [0])
  assert open_ledger.report(delta=1e-3).worst_epsilon() == math.inf


def test_delta_must_be_below_one_over_every_silo_size():
  ledger = example_accounting.SiloLedger(settings=_settings(),
                                         num_examples=[100, 10_000])
  with pytest.raises(ValueError, match='1/10000'):
    ledger.report(delta=1e-4)
  ledger.report(delta=9.9e-5)


def test_record_round_checks():
  ledger = example_accounting.SiloLedger(settings=_settings(),
                                         num_examples=[100, 200])
  with pytest.raises(ValueError, match='Expected round 1'):
    ledger.record_round(2, [0])
  for bad in ([2], [-1], [True], [0, 0]):
    with pytest.raises(ValueError):
      ledger.record_round(1, bad)
  assert ledger.rounds == 0 and ledger.participations == (0, 0)
  ledger.record_round(1, [])  # An empty round is a round.
  assert ledger.rounds == 1
  with pytest.raises(ValueError):
    example_accounting.SiloLedger(settings=_settings(), num_examples=[])
  with pytest.raises(ValueError):
    example_accounting.SiloLedger(settings=_settings(), num_examples=[0])
  with pytest.raises(ValueError):
    _settings(noise_multiplier=math.nan)


def test_save_load_round_trip_is_atomic(tmp_path):
  ledger = _three_silos()
  path = tmp_path / 'silo_ledger.json'
  ledger.save(path)
  ledger.record_round(4, [1])
  ledger.save(path)  # Overwrites in place.
  assert os.listdir(tmp_path) == ['silo_ledger.json']  # No temp file left.
  loaded = example_accounting.SiloLedger.load(path)
  assert loaded.to_json() == ledger.to_json()
  assert json.loads(path.read_text())['silos'][1] == {
      'num_examples': 1000,
      'participations': 2
  }
  assert loaded.report(delta=DELTA) == ledger.report(delta=DELTA)


@pytest.mark.parametrize(
    'keys, value',
    [
        (['format_version'], 2),
        (['unit'], 'client'),
        (['rounds'], 1),  # Fewer rounds than participations.
        (['silos', 0, 'participations'], -1),
        (['silos', 0, 'num_examples'], 1.5),
        (['silos', 0, 'num_examples'], json_edits.DELETE),
        (['noise_multiplier'], '1.1'),
        (['local_steps'], json_edits.DELETE),
    ])
def test_load_refuses_malformed_ledgers(tmp_path, keys, value):
  d = json_edits.edited(_three_silos().to_json(), keys, value)
  path = tmp_path / 'bad.json'
  path.write_text(json.dumps(d))
  with pytest.raises(example_accounting.SiloLedgerFormatError,
                     match='bad.json'):
    example_accounting.SiloLedger.load(path)


def test_load_refuses_nan_and_names_missing_files(tmp_path):
  path = tmp_path / 'nan.json'
  path.write_text(
      json.dumps(_three_silos().to_json()).replace('"noise_multiplier": 1.1',
                                                   '"noise_multiplier": NaN'))
  with pytest.raises(example_accounting.SiloLedgerFormatError, match='NaN'):
    example_accounting.SiloLedger.load(path)
  with pytest.raises(FileNotFoundError, match='missing.json'):
    example_accounting.SiloLedger.load(tmp_path / 'missing.json')

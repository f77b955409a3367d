"""The audit of local DP: each canary's own update as the server sees it.

Flake rate: the lower bound holds with confidence 0.95 for a correct
mechanism, so the "below the analytic epsilon" assert could fail with
probability at most 0.05; with z = 1 (local epsilon 10 per participation)
the measured bounds were about 1, far below it.
"""

from absl import flags
import numpy as np
import pytest

from tests.helpers import programs
from tff_dp import config_checks
from tff_dp.cli import cli_flags
from tff_dp.program import local_audit

pytestmark = pytest.mark.tff

_DIM, _CANARIES = 500, 300


def _config(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv([
      'audit', '--dp_mechanism=none', '--local_dp=gaussian', '--local_clip=1',
      '--local_noise_multiplier=1', '--delta=1e-5', *argv
  ])
  config = cli_flags.config_from_flags(fv)
  config_checks.check_config(config)
  return config


def test_a_correct_local_mechanism_stays_below_its_epsilon(tff_runtime):
  del tff_runtime
  config = _config()
  result = local_audit.audit_local_mechanism(config,
                                             dim=_DIM,
                                             canaries=_CANARIES)
  analytic = local_audit.analytic_local_epsilon(config)
  assert result.analytic == analytic
  assert 9 < analytic['pld'] < 11  # z / 2 = 0.5 for one participation.
  assert result.bound.epsilon <= result.analytic_epsilon
  # Inserted canaries show through the noise: their cosine's mean is about
  # clip / noise norm = 1 / sqrt(500) = 0.045 above the unseen ones', with
  # a standard error of about 0.005 (150 canaries each).
  stats = result.statistics.all_iterates
  assert np.mean(stats[result.inserted_mask]) > np.mean(
      stats[~result.inserted_mask]) + 0.025


def test_without_noise_the_local_audit_has_full_power(tff_runtime):
  del tff_runtime
  result = local_audit.audit_local_mechanism(_config(),
                                             dim=_DIM,
                                             canaries=_CANARIES,
                                             noise_off=True)
  stats = result.statistics.all_iterates
  np.testing.assert_allclose(stats[result.inserted_mask], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(stats[~result.inserted_mask], 0.0)
  assert result.bound.epsilon >= 3
  assert result.analytic_epsilon == np.inf


@pytest.mark.e2e
def test_the_training_audit_refuses_local_dp_and_names_the_way(tmp_path):
  result = programs.run_train('--flagfile=configs/local_gaussian.cfg',
                              f'--output_dir={tmp_path}',
                              program=programs.AUDIT)
  assert result.returncode == 2
  assert '--audit_kind=mechanism' in result.stderr
  assert 'Traceback' not in result.stderr

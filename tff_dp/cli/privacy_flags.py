"""The privacy flags: central mechanism, accounting, local DP, clip and budget.

Three of the flag groups of `cli_flags.TRAIN_FLAG_GROUPS`: the central DP
mechanism and its accounting, noise added at the clients (local and
example-level DP), and clipping, the privacy budget and what a DP run may
release. Defined with the range checks of `checked_flags`.
"""

import math

from absl import flags

from tff_dp import config as config_lib
from tff_dp.cli import checked_flags
from tff_dp.mechanisms import registry as mechanism_registry
from tff_dp.privacy import accounting


def _define_optional_epsilon(fv, name: str, help_text: str) -> None:
  flags.DEFINE_float(name, None, help_text, flag_values=fv)
  checked_flags.register(fv, name, lambda v: math.isfinite(v) and 0 < v <= 1e4,
                         'must be a finite number in (0, 1e4]')


def define_privacy_flags(fv: flags.FlagValues) -> None:
  """The DP mechanism's noise and the accounting parameters."""
  checked_flags.define_enum(fv, 'dp_mechanism',
                            config_lib.DpMechanism.GAUSSIAN_ADAPTIVE.value,
                            config_lib.DpMechanism,
                            mechanism_registry.help_text())
  checked_flags.define_float(
      fv,
      'noise_multiplier',
      1.0, 'Gaussian noise std divided by the clip (z). For adaptive '
      'clipping, the total effective z (TFF splits it).',
      lower=0.0,
      upper=1e6)
  checked_flags.define_float(
      fv,
      'delta',
      1e-5, 'Target delta of the (epsilon, delta) guarantee; must be below '
      '1/population.',
      lower=0.0,
      upper=1.0,
      lower_open=True,
      upper_open=True)
  flags.DEFINE_list(
      'accountants', [kind.value for kind in accounting.AccountantKind],
      'Accountants whose epsilon is computed and reported (comma-separated): '
      'rdp (Renyi DP), pld (privacy loss distributions, tighter). Each is a '
      'valid upper bound; the stated guarantee is the smallest.',
      flag_values=fv)
  known = {kind.value for kind in accounting.AccountantKind}
  checked_flags.register(
      fv, 'accountants',
      lambda v: bool(v) and set(v) <= known and len(set(v)) == len(v),
      f'must be a non-empty list without repeats of {sorted(known)}')
  _define_optional_epsilon(
      fv, 'target_epsilon',
      'If set, the noise multiplier is calibrated before training so that '
      '--rounds rounds reach this epsilon (at --delta, by the tightest '
      'selected accountant); replaces --noise_multiplier.')


def _define_optional_positive(fv, name: str, help_text: str, *,
                              upper: float) -> None:
  flags.DEFINE_float(name, None, help_text, flag_values=fv)
  checked_flags.register(fv, name,
                         lambda v: math.isfinite(v) and 0 < v <= upper,
                         f'must be a finite number in (0, {upper:g}]')


def define_local_dp_flags(fv: flags.FlagValues) -> None:
  """Noise added at the clients (local DP), and DP-SGD inside clients."""
  checked_flags.define_enum(
      fv, 'local_dp', config_lib.LocalDp.NONE.value, config_lib.LocalDp,
      'Noise each client adds to its clipped update before it leaves '
      'the client (local DP). '
      'laplace: L1 clip --local_clip, Lap(2 * clip / --local_epsilon) '
      'per coordinate; gaussian: L2 clip, noise std '
      '--local_noise_multiplier * clip. Combine with a central '
      '--dp_mechanism for client + server noise.')
  checked_flags.define_float(
      fv,
      'local_clip',
      1.0, 'Clip of each update before local noise (L1 for laplace, L2 '
      'for gaussian).',
      lower=0.0,
      upper=1e9,
      lower_open=True)
  _define_optional_positive(
      fv,
      'local_epsilon',
      'Local epsilon per participation of the Laplace mechanism.',
      upper=1e4)
  _define_optional_positive(fv,
                            'local_noise_multiplier',
                            'Noise multiplier of the local Gaussian mechanism.',
                            upper=1e6)
  flags.DEFINE_bool(
      'example_dp',
      False, 'Example-level DP-SGD inside each client (Abadi et al. 2016), for '
      'cross-silo federations: Poisson-sampled batches of expected size '
      '--client_batch_size, per-example clipping to --example_clip, noise '
      '--example_noise_multiplier, --local_steps steps per round.',
      flag_values=fv)
  checked_flags.define_float(fv,
                             'example_noise_multiplier',
                             1.0,
                             'Noise multiplier of the clients\' DP-SGD.',
                             lower=0.0,
                             upper=1e6,
                             lower_open=True)
  checked_flags.define_float(
      fv,
      'example_clip',
      1.0,
      'Per-example gradient clip of the clients\' DP-SGD.',
      lower=0.0,
      upper=1e9,
      lower_open=True)
  checked_flags.define_int(
      fv,
      'local_steps',
      10,
      'DP-SGD steps per client per round (with --example_dp).',
      lower=1,
      upper=100_000)


def define_dp_training_flags(fv: flags.FlagValues) -> None:
  """Clipping, the privacy budget and what a DP run may release."""
  checked_flags.define_float(fv,
                             'clip',
                             0.5,
                             'L2 clip of each client update (gaussian_fixed).',
                             lower=0.0,
                             upper=1e9,
                             lower_open=True)
  checked_flags.define_float(fv,
                             'initial_clip',
                             0.1,
                             'Initial L2 clip (gaussian_adaptive).',
                             lower=0.0,
                             upper=1e9,
                             lower_open=True)
  checked_flags.define_float(
      fv,
      'target_unclipped_quantile',
      0.5,
      'Quantile of update norms the adaptive clip tracks.',
      lower=0.0,
      upper=1.0)
  checked_flags.define_float(
      fv,
      'clip_learning_rate',
      0.2,
      'Learning rate of the adaptive clip (geometric updates).',
      lower=0.0,
      upper=checked_flags.MAX_RATE)
  _define_optional_epsilon(
      fv, 'max_epsilon',
      'Privacy budget: a round runs only if the epsilon after it stays '
      'within this value; otherwise training stops cleanly and the summary '
      'says why.')
  flags.DEFINE_bool(
      'allow_zero_noise',
      False,
      'Permit --noise_multiplier=0 with a DP mechanism (clipping without '
      'noise, e.g. to study clipping alone). Such a run is NOT private: '
      'epsilon is infinite and the privacy statement says so.',
      flag_values=fv)
  flags.DEFINE_bool(
      'release_nonprivate_metrics',
      False,
      'In a DP run, also release values computed from client data WITHOUT '
      'noise (client training loss/accuracy, actual cohort size), under the '
      'prefix nonprivate/. They are outside the DP guarantee.',
      flag_values=fv)

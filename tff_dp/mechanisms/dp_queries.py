"""TF Privacy's Gaussian queries with their noise drawn from secret keys.

The central mechanisms of DP-FedAvg are TF Privacy's queries as TFF's
`tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed` and
`gaussian_adaptive` build them: a `GaussianSumQuery` (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models") or a
`QuantileAdaptiveClipSumQuery` (Andrew et al. 2021, "Differentially Private
Learning with Adaptive Clipping") inside a `NormalizedQuery` that divides by
the fixed `clients_per_round`. The only change is where the noise comes from:
`GaussianSumQuery` adds `tf.random_normal_initializer` draws, i.e. TF's
process-wide generator seeded with 32 bits; `SecretGaussianSumQuery` draws the
same N(0, stddev^2) per coordinate from stateless Philox under a 128-bit key
from the operating system (`tff_dp.mechanisms.noise_seeds`), by float64
Box-Muller (`tff_dp.mechanisms.float64_noise`): TF's own normal sampler clamps
its uniform at 1e-7, so its noise never exceeds 5.68 sigma, and an output
beyond a neighbour's noise support would be a distinguishing event no
epsilon covers (with z = 1 and an update along one coordinate, about 1.4e-6
per participation, which over tens of participations exceeds a delta of
1e-5). Float64 Box-Muller reaches 8.57 sigma. Clipping, the query states
(and so the checkpoints), the DP events and the accounting are unchanged; the
adaptive clip's count query gets its own key. DP-FTRL's tree (Kairouz et al.
2021) is TF Privacy's `TreeResidualSumQuery`, restarted every epoch
(`tff_dp.mechanisms.epoch_tree`), with a secret first seed.
"""

from typing import Any, Optional

import dp_accounting
import tensorflow as tf
import tensorflow_federated as tff

# TFF's own split of the adaptive noise (not exported under tff.aggregators);
# the pinned TFF 0.87 has it, and the tests compare with its named factory.
from tensorflow_federated.python.aggregators import differential_privacy
import tensorflow_privacy as tfp
from tensorflow_privacy.privacy.dp_query import tree_aggregation

from tff_dp import checks
from tff_dp.mechanisms import epoch_tree
from tff_dp.mechanisms import float64_noise
from tff_dp.mechanisms import noise_seeds
from tff_dp.privacy import run_secrets


class SecretGaussianSumQuery(tfp.GaussianSumQuery):
  """`tfp.GaussianSumQuery` whose noise comes from a secret key."""

  def __init__(self, l2_norm_clip, stddev, *, noise_key):
    """Initializes the query.

    Args:
      l2_norm_clip: Clip of each record's global L2 norm.
      stddev: Standard deviation of the noise added to the sum.
      noise_key: Two signed int64 (`tff_dp.privacy.run_secrets.new_noise_key`).
    """
    super().__init__(l2_norm_clip, stddev)
    self._noise_key = tuple(noise_key)

  def get_noised_result(self, sample_state, global_state):
    """As `tfp.GaussianSumQuery.get_noised_result`, with secret seeds."""
    flat = tf.nest.flatten(sample_state)
    seeds = noise_seeds.execution_seeds(self._noise_key, num=len(flat))
    noised = [
        v + float64_noise.gaussian_as(tf.shape(v), seed, global_state.stddev,
                                      v.dtype) for v, seed in zip(flat, seeds)
    ]
    result = tf.nest.pack_sequence_as(sample_state, noised)
    noise_multiplier = global_state.stddev / global_state.l2_norm_clip
    return result, global_state, dp_accounting.GaussianDpEvent(noise_multiplier)


class _SecretQuantileEstimatorQuery(tfp.QuantileEstimatorQuery):
  """The private clipped-count estimate of adaptive clipping, secret noise."""

  def __init__(self, *args, noise_key, **kwargs):
    # Before the base initializer, which builds the below-estimate query.
    self._noise_key = tuple(noise_key)
    super().__init__(*args, **kwargs)

  def _construct_below_estimate_query(self, below_estimate_stddev,
                                      expected_num_records):
    # As TF Privacy's: records of +-0.5, so no clipping ever binds.
    return tfp.NormalizedQuery(SecretGaussianSumQuery(
        0.5, below_estimate_stddev, noise_key=self._noise_key),
                               denominator=expected_num_records)


class SecretQuantileAdaptiveClipSumQuery(tfp.QuantileAdaptiveClipSumQuery):
  """`tfp.QuantileAdaptiveClipSumQuery` with secret noise in both queries."""

  def __init__(self,
               initial_l2_norm_clip,
               noise_multiplier,
               target_unclipped_quantile,
               learning_rate,
               clipped_count_stddev,
               expected_num_records,
               geometric_update=True):
    super().__init__(initial_l2_norm_clip, noise_multiplier,
                     target_unclipped_quantile, learning_rate,
                     clipped_count_stddev, expected_num_records,
                     geometric_update)
    # Same parameters and states as the base class built; new noise source.
    self._quantile_estimator_query = _SecretQuantileEstimatorQuery(
        initial_l2_norm_clip,
        target_unclipped_quantile,
        learning_rate,
        clipped_count_stddev,
        expected_num_records,
        geometric_update,
        noise_key=run_secrets.new_noise_key())
    self._sum_query = SecretGaussianSumQuery(
        initial_l2_norm_clip,
        noise_multiplier * initial_l2_norm_clip,
        noise_key=run_secrets.new_noise_key())


def gaussian_fixed(*, noise_multiplier: float, clients_per_round: int,
                   clip: float) -> tff.aggregators.DifferentiallyPrivateFactory:
  """As `DifferentiallyPrivateFactory.gaussian_fixed`, with secret noise."""
  query = tfp.NormalizedQuery(SecretGaussianSumQuery(
      clip, clip * noise_multiplier, noise_key=run_secrets.new_noise_key()),
                              denominator=float(clients_per_round))
  return tff.aggregators.DifferentiallyPrivateFactory(query)


def gaussian_adaptive(
    *, noise_multiplier: float, clients_per_round: int,
    initial_l2_norm_clip: float, target_unclipped_quantile: float,
    learning_rate: float) -> tff.aggregators.DifferentiallyPrivateFactory:
  """As `DifferentiallyPrivateFactory.gaussian_adaptive`, with secret noise.

  `noise_multiplier` is the effective total z; TFF's
  `adaptive_clip_noise_params` splits it between the value and the clipped
  count (and raises ValueError where the split is impossible).
  """
  value_noise_multiplier, clipped_count_stddev = (
      differential_privacy.adaptive_clip_noise_params(noise_multiplier,
                                                      float(clients_per_round)))
  query = SecretQuantileAdaptiveClipSumQuery(
      initial_l2_norm_clip=initial_l2_norm_clip,
      noise_multiplier=value_noise_multiplier,
      target_unclipped_quantile=target_unclipped_quantile,
      learning_rate=learning_rate,
      clipped_count_stddev=clipped_count_stddev,
      expected_num_records=float(clients_per_round),
      geometric_update=True)
  return tff.aggregators.DifferentiallyPrivateFactory(
      tfp.NormalizedQuery(query, denominator=float(clients_per_round)))


class _SecretTreeNoiseGenerator(tree_aggregation.GaussianNoiseGenerator):
  """TF Privacy's tree noise generator, first seed from a secret key."""

  def __init__(self, noise_std, specs, *, noise_key):
    super().__init__(noise_std, specs, seed=None)
    self._noise_key = tuple(noise_key)

  def initialize(self):
    """A fresh secret seed on every call (the base class reads the clock)."""
    return self._GlobalState(noise_seeds.execution_seed(self._noise_key),
                             tf.constant(self._noise_std, dtype=tf.float32))

  def next(self, state):
    """As the base class's `next` (same seeds, same state), float64 noise."""
    flat_specs = tf.nest.flatten(self._specs)
    flat_seeds = [state.seeds + i for i in range(len(flat_specs))]
    noise = [
        float64_noise.gaussian_as(spec.shape, seed, state.stddev, spec.dtype)
        for spec, seed in zip(flat_specs, flat_seeds)
    ]
    return (tf.nest.pack_sequence_as(self._specs, noise),
            self._GlobalState(flat_seeds[-1] + 1, state.stddev))


def tree_residual_sum_query(
    *,
    clip: float,
    noise_multiplier: float,
    record_specs: Any,
    use_efficient: bool = True) -> tfp.TreeResidualSumQuery:
  """As `tfp.TreeResidualSumQuery.build_l2_gaussian_query`, secret noise."""
  if clip < 0 or noise_multiplier < 0:
    raise ValueError(f'clip and noise_multiplier must be >= 0, got {clip} '
                     f'and {noise_multiplier}.')

  def l2_clip_fn(record_as_list, clip_norm):
    clipped, _ = tf.clip_by_global_norm(record_as_list, clip_norm)
    return clipped

  return tfp.TreeResidualSumQuery(clip_fn=l2_clip_fn,
                                  clip_value=clip,
                                  record_specs=record_specs,
                                  noise_generator=_SecretTreeNoiseGenerator(
                                      clip * noise_multiplier,
                                      record_specs,
                                      noise_key=run_secrets.new_noise_key()),
                                  use_efficient=use_efficient)


def build_tree_aggregator(
    *,
    noise_multiplier: float,
    clip: float,
    clients_per_round: int,
    rounds_per_epoch: int,
    record_specs: Any,
    use_efficient_tree: bool = True,
    noise_seed: Optional[int] = None,
) -> tff.aggregators.UnweightedAggregationFactory:
  """Tree-aggregation DP mean of clipped updates, restarted every epoch.

  Args:
    noise_multiplier: z; every tree node gets Gaussian noise of std z * clip.
    clip: L2 clip C of each client update (global norm over all tensors).
    clients_per_round: n, the fixed denominator of the mean.
    rounds_per_epoch: The tree restarts after every this many `next` calls.
    record_specs: Structure of `tf.TensorSpec`s of one client update.
    use_efficient_tree: Honaker's estimator (less noise on the same tree,
      same privacy) if True; the plain binary tree otherwise.
    noise_seed: Seed of the tree noise. None: a fresh seed from a 128-bit
      secret key on every `initialize` (`tff_dp.mechanisms.dp_queries`); TF Privacy's
      own default would derive it from the clock, which anyone who knows
      when the run started can guess. A fixed value makes the noise
      computable by whoever knows it: tests only. Either way the seed is in
      the aggregator state (checkpointed, so a resumed run continues the
      same trees), which must therefore never be released.

  Returns:
    An unweighted aggregation factory whose result for round t is the
    residual G_t - G_{t-1} of the noisy prefix means G of the current tree
    (after a restart: the new tree's first prefix mean).
  """
  z = checks.check_real('noise_multiplier', noise_multiplier)
  clip = checks.check_real('clip', clip, positive=True)
  n = checks.check_int('clients_per_round', clients_per_round, minimum=1)
  period = checks.check_int('rounds_per_epoch', rounds_per_epoch, minimum=1)
  if noise_seed is None:
    sum_query = tree_residual_sum_query(clip=clip,
                                        noise_multiplier=z,
                                        record_specs=record_specs,
                                        use_efficient=use_efficient_tree)
  else:
    sum_query = tfp.TreeResidualSumQuery.build_l2_gaussian_query(
        clip,
        z,
        record_specs,
        noise_seed=noise_seed,
        use_efficient=use_efficient_tree)
  # warmup=None: the first restart comes after `period` calls, then every
  # `period` calls, i.e. after rounds R, 2R, ... of a 1-based run.
  restart = tfp.restart_query.PeriodicRoundRestartIndicator(period=period)
  # TF Privacy's restart, without the draws a restart discards.
  query = tfp.NormalizedQuery(epoch_tree.EpochTreeQuery(sum_query, restart),
                              denominator=float(n))
  return tff.aggregators.DifferentiallyPrivateFactory(query)

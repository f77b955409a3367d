"""Adaptive clipping plus Gaussian noise on the sum of client updates.

Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
with Adaptive Clipping": the clip follows a privately estimated quantile of
the update norms; TFF splits the total noise multiplier z between the update
sum and the noised clipped-count query, and the two compose into one
Gaussian with multiplier z (`tff_dp.privacy.accounting.gaussian_round_event`).
"""

from typing import Any

from tff_dp.checks import ConfigError
from tff_dp.mechanisms import central

# TFF's `adaptive_clip_noise_params` needs z below 0.1 per expected client:
# the clipped-count query would otherwise need more noise than the total.
MAX_NOISE_PER_CLIENT = 0.1


class GaussianAdaptive(central.CentralMechanism):
  """`--dp_mechanism=gaussian_adaptive`."""
  name = 'gaussian_adaptive'
  help = 'adaptive clipping + Gaussian noise'
  grouped = True

  def check(self, settings: central.DpSettings) -> None:
    limit = MAX_NOISE_PER_CLIENT * settings.clients_per_round
    if settings.noise_multiplier >= limit:
      raise ConfigError(
          'noise_multiplier', settings.noise_multiplier,
          f'must be below 0.1 * --clients_per_round = {limit:g} with '
          'adaptive clipping (the clipped-count estimate would need more '
          'noise than the total); raise --clients_per_round or use '
          '--dp_mechanism=gaussian_fixed')

  def describe(self, settings: central.DpSettings) -> str:
    z = settings.noise_multiplier
    return (f'Gaussian mechanism with adaptive clipping (Andrew et al. 2021): '
            f'initial clip {settings.initial_clip:g}, target quantile '
            f'{settings.target_unclipped_quantile:g}, clip learning rate '
            f'{settings.clip_learning_rate:g}; total noise multiplier '
            f'z = {z:g} (split by TFF between the update sum and the private '
            'clipped-count estimate; accounted as one Gaussian with '
            f'z = {z:g})')

  def ledger_events(self, sampler, settings):
    return central.sampled_gaussian_events(sampler, settings.noise_multiplier)

  def round_values(self, settings, output):
    # The clip of the next round, estimated with the noised count query.
    return {
        central.NOISE_KEY:
            settings.noise_multiplier,
        central.CLIP_KEY:
            float(output.metrics['aggregator']['dp_query_metrics']['clip']),
    }

  def build_aggregator(self, settings: central.DpSettings, **context) -> Any:
    del context
    # TensorFlow only when a process is built, not when a config is checked.
    from tff_dp.mechanisms import dp_queries  # pylint: disable=g-import-not-at-top
    return dp_queries.gaussian_adaptive(
        noise_multiplier=settings.noise_multiplier,
        clients_per_round=settings.clients_per_round,
        initial_l2_norm_clip=settings.initial_clip,
        target_unclipped_quantile=settings.target_unclipped_quantile,
        learning_rate=settings.clip_learning_rate)


MECHANISM = GaussianAdaptive()

"""Central DP settings for the tests that build tff-dp's DP aggregator.

`settings` is `tff_dp.mechanisms.central.DpSettings` with the program's defaults for
what those tests do not vary (--initial_clip=0.1,
--target_unclipped_quantile=0.5, --clip_learning_rate=0.2: adaptive
clipping's start, target and speed). `scaled_noise` builds a mechanism's
aggregator with a multiple of the accounted noise: a deliberately broken
mechanism, for the audit's tests.
"""

import dataclasses

from tff_dp.config import DpMechanism
from tff_dp.mechanisms import central


def settings(mechanism: DpMechanism = DpMechanism.GAUSSIAN_FIXED,
             *,
             clients_per_round: int,
             clip: float,
             noise_multiplier: float = 0.0,
             initial_clip: float = 0.1) -> central.DpSettings:
  """DpSettings of `mechanism`; without noise unless `noise_multiplier`."""
  return central.DpSettings(mechanism=mechanism,
                            noise_multiplier=noise_multiplier,
                            clients_per_round=clients_per_round,
                            clip=clip,
                            initial_clip=initial_clip,
                            target_unclipped_quantile=0.5,
                            clip_learning_rate=0.2)


def scaled_noise(config, scale: float):
  """`config`'s aggregator builder with `scale` times the accounted noise."""

  def build(settings, **context):
    scaled = dataclasses.replace(settings,
                                 noise_multiplier=settings.noise_multiplier *
                                 scale)
    return config.mechanism.build_aggregator(scaled, **context)

  return build

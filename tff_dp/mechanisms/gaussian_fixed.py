"""Fixed clipping plus Gaussian noise on the sum of client updates.

McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private
Recurrent Language Models" (DP-FedAvg): each client update is clipped to L2
norm C, the sum gets N(0, (z C)^2) per coordinate and is divided by the fixed
`clients_per_round`. The noise comes from secret keys
(`tff_dp.mechanisms.dp_queries`).
"""

from typing import Any

from tff_dp.mechanisms import central


class GaussianFixed(central.CentralMechanism):
  """`--dp_mechanism=gaussian_fixed`."""
  name = 'gaussian_fixed'
  help = 'fixed clip --clip + Gaussian noise'
  grouped = True

  def describe(self, settings: central.DpSettings) -> str:
    return (f'Gaussian mechanism on the sum of client updates clipped to '
            f'L2 norm {settings.clip:g} (fixed), noise std = z * clip, '
            f'z = {settings.noise_multiplier:g}')

  def ledger_events(self, sampler, settings):
    return central.sampled_gaussian_events(sampler, settings.noise_multiplier)

  def build_aggregator(self, settings: central.DpSettings, **context) -> Any:
    del context
    # TensorFlow only when a process is built, not when a config is checked.
    from tff_dp.mechanisms import dp_queries  # pylint: disable=g-import-not-at-top
    return dp_queries.gaussian_fixed(
        noise_multiplier=settings.noise_multiplier,
        clients_per_round=settings.clients_per_round,
        clip=settings.clip)


MECHANISM = GaussianFixed()

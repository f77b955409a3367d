"""Training configurations from flags, as the program parses them (pure Python)."""

import os

from absl import flags

from tests.helpers import REPO_ROOT
from tff_dp.cli import cli_flags

SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def smoke_config(**overrides):
  """`configs/smoke.cfg` with --name=value `overrides`, as a `TrainConfig`."""
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['test', f'--flagfile={SMOKE}'] +
     [f'--{k}={v}' for k, v in overrides.items()])
  return cli_flags.config_from_flags(fv)

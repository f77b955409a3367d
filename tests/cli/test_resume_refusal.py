"""A resume under changed flags is refused before the data load and TensorFlow.

The flags a run directory's checkpoint was written with are known without
loading anything; the refusal used to come after the data were loaded (which
imports TensorFlow for streamed data) and the process was built, some 20
seconds in. The checkpoint here is written by the program's own
`CheckpointManager`, for a run on a client-data file that no longer exists:
had the program loaded the data first, it would have said so instead.
"""

import os

from absl import flags
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tff_dp.cli import cli_flags
from tff_dp.program import checkpoint

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _config_json(args):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', *args])
  return cli_flags.config_from_flags(fv).to_json()


@pytest.mark.e2e
def test_changed_flags_are_refused_without_loading_data_or_tensorflow(tmp_path):
  args = [
      f'--flagfile={_SMOKE}', '--dataset=sqlite',
      f'--client_data={tmp_path / "gone.sqlite"}', f'--output_dir={tmp_path}',
      '--run_name=run'
  ]
  checkpoint.CheckpointManager(str(tmp_path / 'run')).save(
      2, [np.zeros(3, np.float32)], {'config': _config_json(args)})
  # Python's own import log: every module the program imports, on stderr.
  refused = programs.run_train(*args,
                               '--noise_multiplier=0.7',
                               env_extra={'PYTHONPROFILEIMPORTTIME': '1'})
  errors = [
      line for line in refused.stderr.splitlines()
      if not line.startswith('import time:')
  ]
  assert refused.returncode == 2, refused.stderr[-3000:]
  assert errors == [
      f'tff-dp: error: --run_name=run: cannot resume {tmp_path / "run"}: '
      'these flags differ from the checkpoint being resumed: '
      '--noise_multiplier: checkpoint 0.5, now 0.7'
  ]
  imported = {
      line.rsplit('|', 1)[1].strip()
      for line in refused.stderr.splitlines()
      if line.startswith('import time:')
  }
  assert 'tff_dp.program.resume' in imported  # The log works.
  assert 'tensorflow' not in imported
  assert 'tff_dp.data.client_data_source' not in imported

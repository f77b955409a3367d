"""A resume under changed flags is refused before the data load and TensorFlow.

The flags a run directory's checkpoint was written with are known without
loading anything; the refusal used to come after the data were loaded (which
imports TensorFlow for streamed data) and the process was built, some 20
seconds in. The checkpoint here is written by the program's own
`CheckpointManager`, for a run on a client-data file that no longer exists:
had the program loaded the data first, it would have said so instead.
"""

import dataclasses
import os
import pathlib

from absl import flags
import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs
from tff_dp.cli import cli_flags
from tff_dp.data import fingerprint
from tff_dp.privacy import run_secrets
from tff_dp.program import checkpoint
from tff_dp.program import prepare
from tff_dp.program import resume
from tff_dp.program import run_privacy
from tff_dp.program import run_start

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _config_json(args):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', *args])
  return cli_flags.config_from_flags(fv).to_json()


def _imported(stderr):
  return {
      line.rsplit('|', 1)[1].strip()
      for line in stderr.splitlines()
      if line.startswith('import time:')
  }


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
  imported = _imported(refused.stderr)
  assert 'tff_dp.program.resume' in imported  # The log works.
  assert 'tensorflow' not in imported
  assert 'tff_dp.data.client_data_source' not in imported


def _checkpoint_meta(args, run_dir, round_num):
  """The meta.json the program writes after `round_num` rounds of the run
  of `args` in `run_dir` (its ledgers, secrets, run id and data), built
  without training."""
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['tff-dp', *args])
  prepared = prepare.prepare_run(cli_flags.config_from_flags(fv))
  tracker = run_privacy.planned_tracker(
      dataclasses.replace(prepared.config, rounds=round_num), prepared.data)
  binding = run_start.RunBinding(run_id=resume.ensure_run_id(str(run_dir)),
                                 data_fingerprint=fingerprint.data_fingerprint(
                                     prepared.data))
  return run_start.checkpoint_meta(prepared.config, tracker, [(round_num, {})],
                                   run_secrets.draw(), binding)


@pytest.mark.e2e
def test_a_fallback_past_released_rounds_is_refused_before_tensorflow(tmp_path):
  # Rounds 1-3 released, the newest checkpoint (round 3) corrupt: resuming
  # from round 2 would release round 3 again with fresh noise. The refusal
  # needs only files: it must come before TensorFlow and the worker (it
  # came after both, 19.5 s in at load 7).
  args = [f'--flagfile={_SMOKE}', f'--output_dir={tmp_path}', '--run_name=run']
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  checkpoints = checkpoint.CheckpointManager(str(run_dir))
  for round_num in (2, 3):
    checkpoints.save(round_num, [np.zeros(3, np.float32)],
                     _checkpoint_meta(args, run_dir, round_num))
  (run_dir / 'metrics.csv').write_text('round\n1\n2\n3\n')
  state = pathlib.Path(checkpoints.path(3)) / 'state.npz'
  state.write_bytes(state.read_bytes()[:-1])  # Truncated.
  refused = programs.run_train(*args,
                               env_extra={'PYTHONPROFILEIMPORTTIME': '1'})
  errors = [
      line for line in refused.stderr.splitlines()
      if not line.startswith('import time:')
  ]
  assert refused.returncode == 2, refused.stderr[-3000:]
  imported = _imported(refused.stderr)
  assert 'tff_dp.program.resume' in imported  # The log works.
  assert 'tensorflow' not in imported, errors
  assert not (run_dir / 'worker.log').exists()
  assert len(errors) == 1, errors
  assert errors[0].startswith(
      f'tff-dp: error: --run_name=run: cannot resume {run_dir}: rounds 3..3 '
      'were released, but the newest valid checkpoint is round 2'), errors


def _snapshot(run_dir):
  """Every file under `run_dir` with its bytes and modification time."""
  return {
      path: (path.read_bytes(), path.stat().st_mtime_ns)
      for path in sorted(pathlib.Path(run_dir).rglob('*'))
      if path.is_file()
  }


@pytest.mark.e2e
def test_a_budget_below_one_round_is_refused_on_resume_leaving_the_run(
    tmp_path):
  # A resume may change --max_epsilon; one that no round fits is refused as
  # in a new run, before TensorFlow, with the run directory untouched. (A
  # resume whose budget the restored ledger has spent stops cleanly, exit 0:
  # tests/program/test_resume.py.)
  args = [f'--flagfile={_SMOKE}', f'--output_dir={tmp_path}', '--run_name=run']
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  checkpoint.CheckpointManager(str(run_dir)).save(
      2, [np.zeros(3, np.float32)], _checkpoint_meta(args, run_dir, 2))
  (run_dir / 'metrics.csv').write_text('round\n1\n2\n')
  before = _snapshot(run_dir)
  refused = programs.run_train(*args,
                               '--rounds=4',
                               '--max_epsilon=0.01',
                               env_extra={'PYTHONPROFILEIMPORTTIME': '1'})
  errors = [
      line for line in refused.stderr.splitlines()
      if not line.startswith('import time:')
  ]
  assert refused.returncode == 2, refused.stderr[-3000:]
  assert len(errors) == 1, errors
  assert errors[0].startswith('tff-dp: error: --max_epsilon=0.01: the first '
                              'round alone costs epsilon '), errors
  assert 'tensorflow' not in _imported(refused.stderr)
  assert _snapshot(run_dir) == before

"""The training program's refusals of a resume, before TensorFlow is imported.

A named run directory that holds a run is resumed. What makes that resume
dishonest is known from files alone: flags that differ from its
checkpoint's (said in about a second, before the data load), released
rounds that no verified checkpoint charges, or a checkpoint of another run
or other data (once the data are loaded). `tff_dp.program.experiment`
checks the same again when it loads the state; here the user hears it
before TensorFlow's import and the worker's start.
"""

import os

from tff_dp import config as config_lib
from tff_dp.cli import exits
from tff_dp.program import resume as resume_rules
from tff_dp.program import run_lock


def check_resume(config: config_lib.TrainConfig, run_dir: str, data,
                 defaults) -> None:
  """Refuses a resume that cannot be honest before importing TensorFlow.

  The same checks run again when the checkpoint's state is loaded
  (`tff_dp.program.experiment`); here they need only the checkpoints'
  verified meta.json and the released rounds (metrics.csv, ledger.json).
  """
  from tff_dp.data import fingerprint  # pylint: disable=g-import-not-at-top
  from tff_dp.program import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoints = checkpoint.CheckpointManager(run_dir)
  round_num, meta, skipped = checkpoints.latest_verified_meta()
  try:
    # Released rounds that no verified checkpoint charges (the newest ones
    # corrupt, or none left): refused here, not after TensorFlow's import and
    # the worker's start.
    resume_rules.check_released(run_dir,
                                csv_path=resume_rules.metrics_csv_path(run_dir),
                                checkpoint_round=round_num,
                                skipped=skipped)
    if meta is None:
      return  # Nothing to resume from: the experiment starts over.
    resume_rules.check_checkpoint(
        meta,
        path=checkpoints.path(round_num),
        round_num=round_num,
        config=config.to_json(),
        defaults=defaults,
        run_id=resume_rules.read_run_id(run_dir),
        data_fingerprint=fingerprint.data_fingerprint(data))
  except resume_rules.ResumeError as e:
    raise exits.UserError(
        f'--run_name={config.run_name}: cannot resume {run_dir}: '
        f'{e}') from e


def refuse_changed_flags(config: config_lib.TrainConfig,
                         defaults: dict[str, object]) -> None:
  """Refuses to resume under changed flags before loading data or TF.

  Loading the data (streamed sources import TensorFlow), calibrating
  --target_epsilon and building the process take seconds to minutes; the
  flags a run directory's checkpoint was written with are known without
  any of it. `check_resume` checks the rest once the data are loaded.

  Args:
    config: The run's configuration, from its flags.
    defaults: Flag name -> default, for every setting of `config`.

  Raises:
    exits.UserError: Another process holds the directory, or the flags
      differ from its checkpoint's.
  """
  if not config.run_name:
    return  # A new directory, named after the time.
  run_dir = os.path.join(config.output_dir, config.run_name)
  holder = run_lock.live_holder(run_dir)
  if holder is not None:
    # Said now, not after loading the data; the lock itself is taken in
    # `tff_dp.cli.train`, and only it excludes a second trainer.
    raise exits.UserError(str(run_lock.RunLockedError(run_dir, holder)))
  from tff_dp.program import checkpoint  # pylint: disable=g-import-not-at-top
  checkpoints = checkpoint.CheckpointManager(run_dir)
  round_num, meta, _ = checkpoints.latest_verified_meta()
  if meta is None:
    return  # Nothing to resume from: the experiment says why, or starts.
  unresolved = ()
  if config.target_epsilon is not None:
    # Its noise multiplier is calibrated on the data, later.
    unresolved = ('noise_multiplier',)
  try:
    resume_rules.check_flags(meta,
                             path=checkpoints.path(round_num),
                             round_num=round_num,
                             config=config.to_json(),
                             defaults=defaults,
                             unresolved=unresolved)
  except resume_rules.ResumeError as e:
    raise exits.UserError(f'--run_name={config.run_name}: cannot resume '
                          f'{run_dir}: {e}') from e

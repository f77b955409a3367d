"""Where a run starts: at round 1, or after its newest valid checkpoint.

A resumed run continues from the checkpoint that `tff_dp.program.resume`
verified: its state, its ledgers, its released rows and its secrets (so it
redraws the cohorts it would have drawn, never fresh ones that would make the
two halves of the run independent draws). The release files are rebuilt from
the checkpoint, never trusted as they are.
"""

import dataclasses
import os
from typing import Any, Optional

from tff_dp.config import TrainConfig
from tff_dp.privacy import run_secrets
from tff_dp.program import checkpoint
from tff_dp.program import release as release_lib
from tff_dp.program import resume as resume_rules
from tff_dp.program import tensorboard_layout


@dataclasses.dataclass(frozen=True)
class RunBinding:
  """What binds a checkpoint to its run and its data (`resume.check_checkpoint`)."""
  run_id: str
  data_fingerprint: str


@dataclasses.dataclass(frozen=True)
class Start:
  """Where the training loop starts.

  Attributes:
    round_num: The first round to train.
    state: The learning process's state before that round.
    last_values: The values released for round `round_num - 1` ({} if none).
    secrets: The run's secrets (the checkpoint's, if resumed).
    rows: The released rows a resume keeps; None for a fresh start.
    block_rows: (round, values) of the checkpoint's block before its last
      round (rounds that shared one TFF call; `training_loop`), oldest
      first.
  """
  round_num: int
  state: Any
  last_values: dict[str, float]
  secrets: run_secrets.RunSecrets
  rows: Optional[list[dict[str, Any]]] = None
  block_rows: tuple[tuple[int, dict[str, float]], ...] = ()

  @property
  def resumed_from(self) -> Optional[int]:
    """The round the run resumed after, or None."""
    return None if self.rows is None else self.round_num - 1


def fresh(template: Any, secrets: run_secrets.RunSecrets) -> Start:
  """A run that starts at round 1 from the initial state `template`."""
  return Start(round_num=1, state=template, last_values={}, secrets=secrets)


def restore(config: TrainConfig, run_dir: str,
            checkpoints: checkpoint.CheckpointManager, template: Any,
            privacy: Any, defaults: dict[str, Any], *,
            binding: RunBinding) -> Optional[Start]:
  """Restores state and ledgers from the newest valid checkpoint.

  Returns:
    The `Start` after the checkpoint's round, or None if nothing was ever
    released (then the run starts over at round 1).

  Raises:
    resume_rules.ResumeError: If the run cannot be resumed honestly.
  """
  stray = checkpoints.remove_stray_temporaries()
  if stray:
    print(f'warning: removed half-written checkpoints {stray}', flush=True)
  csv_path = release_lib.csv_path(run_dir)
  ckpt, skipped = checkpoints.load_latest_valid(template)
  reasons = [reason for _, reason in skipped]
  if ckpt is None:
    resume_rules.check_released(run_dir,
                                csv_path=csv_path,
                                checkpoint_round=None,
                                skipped=reasons)
    return None
  secrets = resume_rules.check_checkpoint(
      ckpt.meta,
      path=ckpt.path,
      round_num=ckpt.round_num,
      config=config.to_json(),
      defaults=defaults,
      run_id=binding.run_id,
      data_fingerprint=binding.data_fingerprint)
  resume_rules.check_released(run_dir,
                              csv_path=csv_path,
                              checkpoint_round=ckpt.round_num,
                              skipped=reasons)
  for path in checkpoints.move_aside([round_num for round_num, _ in skipped]):
    print(f'warning: moved an invalid checkpoint aside to {path}', flush=True)
  for reason in reasons:
    print(f'warning: skipped an invalid checkpoint: {reason}', flush=True)
  # The ledger files are rewritten from the verified checkpoint only.
  privacy.restore_json(ckpt.meta['ledgers'])
  privacy.save(run_dir)
  rows = resume_rules.truncate_rows(csv_path, last_round=ckpt.round_num)
  print(f'resuming after round {ckpt.round_num} from {ckpt.path}', flush=True)
  return Start(round_num=ckpt.round_num + 1,
               state=ckpt.state,
               last_values=ckpt.meta['released'],
               secrets=secrets,
               rows=rows,
               block_rows=tuple(
                   (int(round_num), values)
                   for round_num, values in ckpt.meta.get('block', ())))


def open_releaser(config: TrainConfig,
                  run_dir: str,
                  start: Start,
                  *,
                  resume: bool,
                  release_nonprivate: bool,
                  flagfile: str,
                  population: Optional[int] = None) -> release_lib.Releaser:
  """The run's `Releaser`, its sinks rebuilt to what `start` has released.

  The run-level text and description (flags, hparams, chart layout) are
  written after the rebuild, which starts the sinks' own files over: a
  resumed run has them once, with its own settings. `population` (N,
  public) gives the hparams N and the sampling rate q.
  """
  releaser = release_lib.Releaser(run_dir,
                                  private=config.private,
                                  allow_nonprivate=release_nonprivate)
  if resume and start.rows is None:
    releaser.replay([])  # Nothing was released: start over, cleanly.
  if start.rows is not None:
    releaser.replay(start.rows)
    last = int(start.rows[-1]['round']) if start.rows else 0
    for round_num, values in (*start.block_rows, (start.round_num - 1,
                                                  start.last_values)):
      if round_num > last:
        # Checkpointed but not yet released when the run stopped.
        releaser.release(round_num, values)
  releaser.write_text('flags', flagfile, verbatim=True)
  releaser.describe_run(
      tensorboard_layout.describe(config,
                                  run_name=os.path.basename(
                                      os.path.normpath(run_dir)),
                                  population=population))
  return releaser


def checkpoint_meta(config: TrainConfig, privacy: Any,
                    rows: list[tuple[int, dict[str, float]]],
                    secrets: run_secrets.RunSecrets,
                    binding: RunBinding) -> dict[str, Any]:
  """What a checkpoint stores beside the state, for `restore`: `rows` are
  (round, values) of the block it ends, the checkpoint's round last."""
  return {
      'config': config.to_json(),
      'ledgers': privacy.to_json(),
      'released': rows[-1][1],
      # The block's earlier rows: released after the checkpoint is written,
      # so a run stopped in between releases them when it resumes.
      'block': [[round_num, values] for round_num, values in rows[:-1]],
      # Only here: checkpoints stay private (see the statement).
      'secrets': secrets.to_json(),
      # What binds the checkpoint to this run and its data
      # (`tff_dp.program.resume.check_checkpoint`).
      'run_id': binding.run_id,
      'data_fingerprint': binding.data_fingerprint,
  }

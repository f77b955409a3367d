"""tff-dp's training program in a subprocess, as `python -m` starts it.

Every test that runs `python -m tff_dp.cli.train` goes through `run_train`
(or `start_train`, to signal it while it runs): from the repository root,
with TensorFlow's C++ logging quiet unless a test asks otherwise. A test on
fake Stack Overflow counts runs the same program through
`TRAIN_ON_FAKE_STACKOVERFLOW`, which expects the fakes' hashes first.
"""

import os
import subprocess
import sys

from tests.helpers import REPO_ROOT

TRAIN = 'tff_dp.cli.train'
# Central pretraining on public clients (`./run.sh pretrain`).
PRETRAIN = 'tff_dp.cli.pretrain'
# The training program after writing fake word and tag counts in its
# --data_dir, their hashes expected instead of TFF's (fake_stackoverflow).
TRAIN_ON_FAKE_STACKOVERFLOW = 'tests.helpers.fake_stackoverflow'
# The audit program, and the same on a mechanism with a tenth of the noise.
AUDIT = 'tff_dp.cli.audit'
BROKEN_AUDIT = 'tests.helpers.broken_audit'


def _environment(env_extra: dict[str, str | None] | None) -> dict[str, str]:
  """This process's environment, TF_CPP_MIN_LOG_LEVEL=3, then `env_extra`."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  for name, value in (env_extra or {}).items():
    if value is None:
      env.pop(name, None)
    else:
      env[name] = value
  return env


def _command(args, program: str) -> list[str]:
  return [sys.executable, '-m', program, *args]


def run_train(*args: str,
              env_extra: dict[str, str | None] | None = None,
              timeout: float = 300,
              check: bool = False,
              program: str = TRAIN) -> subprocess.CompletedProcess:
  """Runs `python -m tff_dp.cli.train ARGS...` and waits for it.

  Args:
    *args: The program's flags.
    env_extra: Environment variables to set (TF_CPP_MIN_LOG_LEVEL included)
      or, with the value None, to remove.
    timeout: Seconds before subprocess.TimeoutExpired.
    check: Assert that the program exited 0 (the message: stderr's end).
    program: The module `python -m` runs: `TRAIN`, `PRETRAIN`,
      `TRAIN_ON_FAKE_STACKOVERFLOW`, `AUDIT` or `BROKEN_AUDIT`.

  Returns:
    The finished process, with its stdout and stderr as text.
  """
  result = subprocess.run(_command(args, program),
                          cwd=REPO_ROOT,
                          env=_environment(env_extra),
                          capture_output=True,
                          text=True,
                          timeout=timeout)
  if check:
    assert result.returncode == 0, result.stderr[-3000:]
  return result


def start_train(
    *args: str,
    env_extra: dict[str, str | None] | None = None) -> subprocess.Popen:
  """Starts `python -m tff_dp.cli.train ARGS...` as `run_train` runs it.

  Args:
    *args: The program's flags.
    env_extra: As for `run_train`.

  Returns:
    The running process; its stdout and stderr are text pipes.
  """
  return subprocess.Popen(_command(args, TRAIN),
                          cwd=REPO_ROOT,
                          env=_environment(env_extra),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE,
                          text=True)

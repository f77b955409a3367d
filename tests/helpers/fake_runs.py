"""Run directories as the training program writes them, without training.

`write_run` writes a finished run's released files (config.json,
summary.json, metrics.csv, the run marker) from given numbers, for the
tests of what a sweep reads, tabulates and plots. Run as a program
(`python -m tests.helpers.fake_runs --output_dir=D --run_name=R ...`), it is a
fake training program for the tests of the sweep's runner: it takes the
training program's flags, "trains" --rounds rounds (checkpointing each one,
resuming after the last one checkpointed), and appends what it did to the
file named by $FAKE_TRAINER_LOG: `<run> start|resume <round> threads=<N>`
and `<run> done`. $FAKE_TRAINER_SECONDS: seconds per round;
$FAKE_TRAINER_FAIL: a run name that exits 2 with one error line. It imports
nothing of tff_dp's programs, so it starts in a fraction of a second.
"""

import csv
import json
import math
import os
import signal
import sys
import time
from typing import Optional, Sequence

RUN_MARKER = '.tff-dp-run'


def _epsilon(round_num: int, noise: float) -> float:
  # Any increasing function of the rounds: the tests compare files, not DP.
  return round(math.sqrt(round_num) / noise, 6)


def write_run(output_dir: str,
              name: str,
              *,
              accuracies: Sequence[float],
              noise: float = 1.0,
              seed: int = 0,
              private: bool = True,
              target_epsilon: Optional[float] = None,
              wall_seconds: Optional[float] = None) -> str:
  """Writes a finished run with one accuracy per round; returns its path."""
  run_dir = os.path.join(output_dir, name)
  os.makedirs(run_dir, exist_ok=True)
  rounds = len(accuracies)
  with open(os.path.join(run_dir, RUN_MARKER), 'w') as f:
    f.write('run_id=' + '0' * 32 + '\n')
  config = {
      'dataset': 'digits',
      'noise_multiplier': noise,
      'dp_mechanism': 'gaussian_adaptive' if private else 'none',
      'seed': seed,
      'target_epsilon': target_epsilon,
      'rounds': rounds,
      'run_name': name,
      'output_dir': output_dir,
  }
  with open(os.path.join(run_dir, 'config.json'), 'w') as f:
    json.dump(config, f)
  with open(os.path.join(run_dir, 'metrics.csv'), 'w', newline='') as f:
    keys = ['round', 'eval/accuracy', 'eval/loss']
    keys += ['privacy/epsilon_pld', 'privacy/epsilon_rdp'] if private else []
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for i, accuracy in enumerate(accuracies, start=1):
      row = {'round': i, 'eval/accuracy': accuracy, 'eval/loss': 1 - accuracy}
      if private:
        row['privacy/epsilon_pld'] = _epsilon(i, noise)
        row['privacy/epsilon_rdp'] = _epsilon(i, noise) * 1.1
      writer.writerow(row)
  epsilon = _epsilon(rounds, noise)
  summary = {
      'private': private,
      'guarantees': ['central'] if private else [],
      'accuracy': accuracies[-1],
      'accuracy_key': 'eval/accuracy',
      'headline_key': 'eval/accuracy',
      'headline_value': accuracies[-1],
      'epsilon': {
          'rdp': epsilon * 1.1,
          'pld': epsilon
      } if private else {},
      'guarantee_epsilon': epsilon if private else None,
      'guarantee_accountant': 'pld' if private else None,
      'local_epsilon': None,
      'record_level_epsilon': None,
      'delta': 1e-5 if private else None,
      'rounds': rounds,
      'rounds_planned': rounds,
      'stop_reason': f'completed {rounds} rounds',
      'wall_seconds': wall_seconds,
  }
  with open(os.path.join(run_dir, 'summary.json'), 'w') as f:
    json.dump(summary, f)
  return run_dir


def _flags(argv: Sequence[str]) -> dict[str, str]:
  values = {}
  for arg in argv:
    if arg.startswith('--') and '=' in arg:
      name, value = arg[2:].split('=', 1)
      values[name] = value
  return values


def _log(text: str) -> None:
  path = os.environ.get('FAKE_TRAINER_LOG')
  if path:
    with open(path, 'a') as f:
      f.write(text + '\n')


def main(argv: Sequence[str]) -> int:
  """The fake training program (see the module docstring)."""
  signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
  values = _flags(argv)
  name = values['run_name']
  if name == os.environ.get('FAKE_TRAINER_FAIL'):
    print(f'tff-dp: error: flag --run_name={name}: refused by the fake',
          file=sys.stderr)
    return 2
  run_dir = os.path.join(values['output_dir'], name)
  os.makedirs(os.path.join(run_dir, 'checkpoints'), exist_ok=True)
  checkpoint = os.path.join(run_dir, 'checkpoints', 'round')
  done = 0
  if os.path.exists(checkpoint):
    with open(checkpoint) as f:
      done = int(f.read())
  threads = os.environ.get('TF_NUM_INTRAOP_THREADS', '-')
  _log(f'{name} {"resume" if done else "start"} {done} threads={threads}')
  rounds = int(values.get('rounds', 3))
  seconds = float(os.environ.get('FAKE_TRAINER_SECONDS', '0'))
  for round_num in range(done + 1, rounds + 1):
    time.sleep(seconds)
    with open(checkpoint, 'w') as f:
      f.write(str(round_num))
  noise = float(values.get('noise_multiplier', 1.0))
  private = values.get('dp_mechanism', 'gaussian_adaptive') != 'none'
  write_run(values['output_dir'],
            name,
            accuracies=[0.5 + 0.01 * r for r in range(1, rounds + 1)],
            noise=noise,
            seed=int(values.get('seed', 0)),
            private=private)
  _log(f'{name} done')
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))

"""What the round loop does outside the round, per round, against the round number.

  ./run.sh bench outside-round [--rounds=10,100,500,1000,1500] [--window=9]
                               [--sinks] [--round_seconds=S]
  (= .venv/bin/python -m benchmarks.outside_round ...)

Issue 21's target: the time outside the round flat in the round number (at
round 1,500 within 10% of round 10). This benchmark replays, without
training, what `tff_dp.program.training_loop.run_training_loop` and the
program's `persist` do for privacy between rounds, on the main job's
ledger (configs/default.cfg: Poisson sampling q = 70 / 700 = 0.1, z = 1,
delta 1e-5, accountants rdp and pld at the project's PLD discretization),
with a budget set (`--max_epsilon`, never reached here) so that the budget
check runs as in a run that has one:

  budget_check     `PrivacyTracker.epsilons(next_round=r)` before round r
  charge           `PrivacyTracker.charge(r, cohort)` after it ran
  released_values  `PrivacyTracker.released_values()` (the epsilons released)
  checkpoint_json  the ledgers' part of a checkpoint: the central ledger's
                   new round appended to its journal
                   (`tff_dp.program.ledger_journal`), and the meta.json
                   of the reference (`checkpoint.meta_json`), written,
                   fsync'ed and hashed
  ledger_save      `PrivacyTracker.save(run_dir)` (ledger.json, extended)

With `--sinks` (imports TensorFlow Federated, ~5 s more) it also times the
release of a round's row to each sink of `tff_dp.program.sinks`, as
`tff_dp.program.release.Releaser` does (release_tensorboard; release_csv:
metrics.csv, `tff_dp.program.csv_sink`, which appends the round's row),
and `CheckpointManager.save` of a W1-sized state (rotation included);
metrics.csv starts with the rounds before the window, its sink opened on
them as a resumed run's is.

Between the budget check and the charge the round itself is stood in for
by `--round_seconds` of untimed sleep (default 0.06 s, about a W1 round).

For each round number R of `--rounds`, the rounds before R - window are
charged without being timed, then the `--window` rounds up to R are run step
by step as the loop runs them; a step's time is its median over the window.
Pure Python without `--sinks`. Prints one table (seconds per round) and the
ratio of the last round number's total to the first's, and the epsilons
released at each R (they must not change with an optimization).
"""

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import privacy_tracking
from tff_dp.program import checkpoint  # numpy only until it saves a state.
from tff_dp.program import ledger_journal

PRIVACY_STEPS = ('budget_check', 'charge', 'released_values', 'checkpoint_json',
                 'ledger_save')
SINK_STEPS = ('release_tensorboard', 'release_csv', 'checkpoint_save')
_POPULATION = 700
_COHORT = 70
_MAX_EPSILON = 1e6  # Checked every round, never reached.


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog='./run.sh bench outside-round',
                                   description=__doc__.splitlines()[0])
  parser.add_argument('--rounds',
                      default='10,100,500,1000,1500',
                      help='round numbers at which to time (comma-separated)')
  parser.add_argument('--window',
                      type=int,
                      default=9,
                      help='rounds timed up to each round number (median)')
  parser.add_argument('--sinks',
                      action='store_true',
                      help='also time the releases and the state checkpoint '
                      '(imports TensorFlow Federated)')
  parser.add_argument('--round_seconds',
                      type=float,
                      default=0.06,
                      help='untimed sleep standing in for each round')
  parser.add_argument('--json', help='also write the result here (JSON)')
  args = parser.parse_args(argv[1:])
  args.rounds = sorted({int(r) for r in args.rounds.split(',')})
  if args.rounds[0] <= args.window or args.window < 1:
    parser.error('every round number must exceed --window >= 1')
  return args


def main_job_tracker() -> privacy_tracking.PrivacyTracker:
  """The central ledger of configs/default.cfg, as `run_privacy` builds it."""
  event = accounting.gaussian_round_event(
      sampling=sampling.ClientSampling.POISSON,
      population=_POPULATION,
      clients_per_round=_COHORT,
      noise_multiplier=1.0)
  return privacy_tracking.PrivacyTracker(ledger=privacy_ledger.PrivacyLedger(
      accounting.neighboring_relation(sampling.ClientSampling.POISSON)),
                                         round_event=lambda _: event,
                                         delta=1e-5,
                                         accountants=[
                                             accounting.AccountantKind.RDP,
                                             accounting.AccountantKind.PLD
                                         ])


def _checkpoint_ledgers(tracker, journals, directory: str) -> None:
  """The ledgers' share of a checkpoint, as `CheckpointManager.save` writes it."""
  data = checkpoint.meta_json({
      'ledgers': journals.record(tracker.to_json())
  }).encode()
  path = os.path.join(directory, 'meta.json')
  with open(path, 'wb') as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
  with open(path, 'rb') as f:
    hashlib.sha256(f.read()).hexdigest()


class _Sinks:
  """The releases and the state checkpoint (TFF imported only here)."""

  def __init__(self, run_dir: str):
    # pylint: disable=g-import-not-at-top
    import numpy as np

    from tff_dp.program import checkpoint
    from tff_dp.program import release as release_lib
    from tff_dp.program import sinks as sinks_lib
    # pylint: enable=g-import-not-at-top
    assert [s.name for s in sinks_lib.SINKS] == ['tensorboard/', 'metrics.csv']
    self._run_dir = run_dir
    self._check_keys = release_lib.check_release_keys
    self._releaser = release_lib.Releaser(run_dir,
                                          private=True,
                                          allow_nonprivate=False)
    self._checkpoints = checkpoint.CheckpointManager(run_dir)
    # W1's MLP 784-128-10 and a server momentum of the same shapes.
    shapes = [(784, 128), (128,), (128, 10), (10,)]
    self._state = [np.zeros(s, np.float32) for s in shapes] * 2
    self._csv = release_lib.csv_path(run_dir)
    self._sinks_lib = sinks_lib

  def prefill(self, rounds: int, values: dict[str, float]) -> None:
    """metrics.csv as `rounds` released rounds left it (fast, no TFF), and
    its sink opened on it, as a resumed run's is."""
    keys = sorted(values)
    with open(self._csv, 'w') as f:
      f.write(','.join(['round'] + keys) + '\n')
      for r in range(1, rounds + 1):
        f.write(','.join([str(r)] + [repr(values[k]) for k in keys]) + '\n')
    # The sink keeps the rows it released in memory: one opened before the
    # file was written would release only the timed windows' rows (what
    # this benchmark did until the sixth step of benchmarks/README.md).
    # pylint: disable=protected-access
    self._releaser._sinks[-1] = self._sinks_lib.SINKS[-1].build(self._run_dir)

  def release(self, round_num: int, values: dict[str, float], timed) -> None:
    """`Releaser.release`, each sink timed on its own (in its order)."""
    self._check_keys(values, private=True, allow_nonprivate=False)
    row = {key: float(value) for key, value in values.items()}
    # pylint: disable=protected-access
    for step, sink in zip(('release_tensorboard', 'release_csv'),
                          self._releaser._sinks):
      timed(step, lambda s=sink: asyncio.run(s.release(row, key=round_num)))

  def checkpoint(self, round_num: int) -> None:
    self._checkpoints.save(round_num, self._state, {'round_values': 1})

  def close(self) -> None:
    self._releaser.close()


def time_window(tracker, journals, end: int, args: argparse.Namespace,
                run_dir: str, sinks) -> dict[str, float]:
  """Runs rounds end - window + 1 .. end step by step; median per step."""
  window = args.window
  steps = list(PRIVACY_STEPS) + list(SINK_STEPS if sinks else ())
  timings = {step: [] for step in steps}
  eval_values = {'eval/loss': 0.5, 'eval/accuracy': 0.9}
  cohort = list(range(_COHORT))

  def timed(step: str, fn: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = fn()
    timings[step].append(time.perf_counter() - start)
    return result

  for round_num in range(end - window + 1, end + 1):
    epsilons = timed('budget_check',
                     lambda: tracker.epsilons(next_round=round_num))
    assert accounting.tightest_epsilon(epsilons)[1] <= _MAX_EPSILON
    time.sleep(args.round_seconds)
    timed('charge', lambda: tracker.charge(round_num, cohort))
    values = timed('released_values', tracker.released_values)
    if sinks:
      timed('checkpoint_save', lambda: sinks.checkpoint(round_num))
    timed('checkpoint_json',
          lambda: _checkpoint_ledgers(tracker, journals, run_dir))
    timed('ledger_save', lambda: tracker.save(run_dir))
    if sinks:
      row = dict(eval_values, **values)
      sinks.release(round_num, row, timed)
  medians = {step: statistics.median(t) for step, t in timings.items()}
  medians['total'] = sum(medians.values())
  return medians


def run(args: argparse.Namespace) -> dict[str, Any]:
  """Times every round number of `args.rounds`; returns the result."""
  tracker = main_job_tracker()
  rows = []
  with tempfile.TemporaryDirectory(prefix='outside-round-') as run_dir:
    journals = ledger_journal.LedgerJournals(run_dir)
    sinks = _Sinks(run_dir) if args.sinks else None
    try:
      for end in args.rounds:
        start = end - args.window + 1
        for round_num in range(tracker.ledger.rounds + 1, start):
          tracker.charge(round_num, [])
        if sinks is not None:
          released = dict({
              'eval/loss': 0.5,
              'eval/accuracy': 0.9
          }, **tracker.released_values())
          sinks.prefill(start - 1, released)
        seconds = time_window(tracker, journals, end, args, run_dir, sinks)
        epsilons = {kind.value: eps for kind, eps in tracker.epsilons().items()}
        rows.append({'round': end, 'seconds': seconds, 'epsilons': epsilons})
    finally:
      if sinks is not None:
        sinks.close()
  first, last = rows[0]['seconds']['total'], rows[-1]['seconds']['total']
  return {
      'rounds': args.rounds,
      'window': args.window,
      'sinks': args.sinks,
      'round_seconds': args.round_seconds,
      'rows': rows,
      'ratio_last_over_first': last / first,
  }


def format_result(result: dict[str, Any]) -> str:
  """The table: seconds per round of each step at each round number."""
  steps = list(result['rows'][0]['seconds'])
  header = f"{'step':<20}" + ''.join(
      f"{'r=' + str(r['round']):>11}" for r in result['rows'])
  lines = [
      f"Outside the round, seconds per round (median over {result['window']} "
      'rounds up to r); main job ledger (Poisson q=0.1, z=1, delta 1e-5, '
      f"rdp+pld); rounds stood in for by {result['round_seconds']} s of "
      'sleep', header, '-' * len(header)
  ]
  for step in steps:
    lines.append(f'{step:<20}' + ''.join(
        f"{r['seconds'][step]:>11.5f}" for r in result['rows']))
  rounds = result['rounds']
  lines.append(f"ratio total r={rounds[-1]} / r={rounds[0]}: "
               f"{result['ratio_last_over_first']:.2f}")
  for r in result['rows']:
    eps = ', '.join(f'{k} {v!r}' for k, v in r['epsilons'].items())
    lines.append(f"epsilon after round {r['round']}: {eps}")
  return '\n'.join(lines)


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  result = run(args)
  print(format_result(result))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=1)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))

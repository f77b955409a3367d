"""Fault campaign: SIGKILL training at random moments, resume, check it all.

  .venv/bin/python -m benchmarks.fault_campaign [--kills 20] [--seed S]
      [--rounds 8] [--output_dir DIR] [--keep]

From the repository root. Trains a short smoke run (configs/smoke.cfg with
--rounds) in a subprocess, over and over: each attempt is either SIGKILLed
from outside after a random delay, or kills itself at a random named fault
point (`tff_dp.faults`, TFF_DP_CRASH_AT=<point>:<round>); the next attempt
resumes the same run directory. Random delays are drawn over the expected
length of the attempt (start-up included, measured on earlier attempts), fault
points over the rounds not yet released; once all rounds of a run are
released, an attempt is killed only one time in four. When a run completes
before all kills have happened, the next run (campaign-2, ...) starts; once
the kills are spent, the last run finishes without faults. Every completed run
is then checked:

* summary.json and ledger.json: rounds == planned, and the ledger holds
  exactly `planned` copies of the round event of the configuration;
* epsilon (summary and ledger, every accountant) equals the epsilon of
  `planned` rounds computed here with tff_dp.accounting, exactly;
* metrics.csv holds rounds 1..planned, each once;
* TensorBoard holds each scalar exactly once per round that released it;
* no TFF worker of the run is left running;
* at the end, no attempt's temporary copy of the client data is left.

After each kill: the ledger on disk charges every released round, and no TFF
worker of the attempt survives it. Prints survived/total, the rounds lost per
kill (rounds released before the kill minus the round the resumed run started
after; negative if it continued from a checkpointed, charged round that was
not yet released) and the number of epsilon mismatches. The exit code is 0
only if every kill was survived and every check passed.

One process at a time (the machine has 2 cores); all run directories go to a
temporary directory (or --output_dir) that is removed unless --keep is given
or a check failed.
"""

import argparse
import collections
import dataclasses
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

from tff_dp import accounting
from tff_dp import faults
from tff_dp import resume

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
# The line tff_dp.runtime writes to worker.log for every worker it starts
# (runtime.WORKER_LOG_PREFIX; not imported: that would import TFF here).
_WORKER_LINE = re.compile(r'tff-dp: started TFF worker pid (\d+)')
_RESUMING = re.compile(r'^resuming after round (\d+)')
_ROUND = re.compile(r'^round (\d+)/(\d+)')
_ATTEMPT_TIMEOUT_SECONDS = 600
_WORKER_GONE_SECONDS = 15.0
_FINISHED_RUN_KILL_RATE = 0.25
# Per-round tag groups that are released every round (eval/ may skip rounds
# with --eval_every; checked against the CSV instead).
_EVERY_ROUND_PREFIXES = ('privacy/epsilon_', 'time/', 'cohort/')


@dataclasses.dataclass
class Kill:
  """One SIGKILL and what the resume made of it."""
  number: int
  run_name: str
  how: str                      # 'timer 12.3 s' or 'checkpoint_write:3'
  # After the kill, on disk: the last round released (CSV or ledger, as the
  # resume logic counts it), the last CSV row and the rounds in ledger.json.
  released_before: int
  csv_before: int
  charged_before: int
  workers_left: list[int]       # Workers of the attempt still running.
  resumed_after: Optional[int] = None  # Round the next attempt started after.
  resume_error: str = ''        # Why the next attempt failed, if it did.

  @property
  def rounds_lost(self) -> Optional[int]:
    if self.resumed_after is None:
      return None
    return self.released_before - self.resumed_after

  @property
  def survived(self) -> bool:
    return (not self.resume_error and self.resumed_after is not None and
            not self.workers_left and self.charged_before >= self.csv_before)


@dataclasses.dataclass
class Attempt:
  """One training subprocess: its exit and what it printed."""
  returncode: int
  killed_by_us: bool
  seconds: float
  first_round_at: Optional[float]   # Seconds from start to the first round.
  round_times: list[float]          # Seconds between consecutive rounds.
  resumed_after: Optional[int]      # From 'resuming after round N'.
  first_round: Optional[int]        # The first 'round k/N' it printed.
  stderr: str
  pid: int = 0


def started_after(attempt: Attempt, *, progressed: bool) -> Optional[int]:
  """The round `attempt` continued after (0: from scratch), if observable.

  The program prints 'resuming after round N' whenever it restores a
  checkpoint, before it runs any round; without that line it started from
  scratch. Whether it started at all shows in its first round line, or, if it
  was killed before printing one, in what its rounds left on disk (ledger,
  checkpoints). An attempt
  killed before any of that tells nothing (None): the disk is unchanged, so
  the next attempt starts where this one would have.
  """
  if attempt.resumed_after is not None:
    return attempt.resumed_after
  if attempt.first_round is not None:
    return attempt.first_round - 1
  return 0 if progressed else None


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m benchmarks.fault_campaign',
      description='SIGKILLs training at random moments and checks resumes.')
  parser.add_argument('--kills', type=int, default=20,
                      help='number of kills (default 20)')
  parser.add_argument('--seed', type=int, default=None,
                      help='random seed (default: drawn and printed)')
  parser.add_argument('--rounds', type=int, default=8,
                      help='rounds of each smoke run (default 8)')
  parser.add_argument('--output_dir', default=None,
                      help='where run directories go (default: a temporary '
                      'directory)')
  parser.add_argument('--keep', action='store_true',
                      help='keep the run directories')
  args = parser.parse_args(argv[1:])
  if args.kills < 1:
    parser.error(f'--kills={args.kills}: must be at least 1')
  if args.rounds < 2:
    parser.error(f'--rounds={args.rounds}: must be at least 2')
  return args


def read_flagfile(path: str) -> dict[str, str]:
  flags = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith('--') and '=' in line:
        key, value = line[2:].split('=', 1)
        flags[key] = value
  return flags


def expected_epsilons(flags: dict[str, str], rounds: int
                      ) -> tuple[object, float, dict[str, float]]:
  """(round event, delta, {accountant: epsilon of `rounds` rounds}).

  Computed from the flags given to the program, not from anything the run
  wrote, so that a run that charged the wrong event is caught too.
  """
  sampling = accounting.ClientSampling(flags['client_sampling'])
  event = accounting.gaussian_round_event(
      sampling=sampling, population=int(flags['num_clients']),
      clients_per_round=int(flags['clients_per_round']),
      noise_multiplier=float(flags['noise_multiplier']))
  kinds = [accounting.AccountantKind(k) for k in
           flags.get('accountants', ','.join(
               k.value for k in accounting.AccountantKind)).split(',')]
  relation = accounting.neighboring_relation(sampling)
  return event, float(flags['delta']), {
      kind.value: accounting.compute_epsilon(
          [event] * rounds, delta=float(flags['delta']), accountant=kind,
          relation=relation)
      for kind in kinds
  }


def worker_pids(run_dir: str) -> list[int]:
  path = os.path.join(run_dir, 'worker.log')
  if not os.path.isfile(path):
    return []
  with open(path, errors='replace') as f:
    return [int(pid) for pid in _WORKER_LINE.findall(f.read())]


def _is_running_worker(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/cmdline', 'rb') as f:
      cmdline = f.read()
    with open(f'/proc/{pid}/stat') as f:
      state = f.read().rsplit(')', 1)[1].split()[0]
  except OSError:
    return False
  return b'worker_binary' in cmdline and state != 'Z'


def workers_left(pids, timeout: float = _WORKER_GONE_SECONDS) -> list[int]:
  """The pids still running as TFF workers after `timeout` seconds."""
  deadline = time.monotonic() + timeout
  alive = [pid for pid in pids if _is_running_worker(pid)]
  while alive and time.monotonic() < deadline:
    time.sleep(0.1)
    alive = [pid for pid in alive if _is_running_worker(pid)]
  return alive


def ledger_rounds(run_dir: str) -> int:
  path = os.path.join(run_dir, 'ledger.json')
  if not os.path.isfile(path):
    return 0
  try:
    return accounting.PrivacyLedger.load(path).rounds
  except (accounting.LedgerFormatError, OSError, ValueError):
    return 0


def disk_progress(run_dir: str) -> tuple[int, list[str]]:
  """What rounds leave on disk before their release: ledger and checkpoints."""
  checkpoints = sorted(os.path.basename(path) for path in glob.glob(
      os.path.join(run_dir, 'checkpoints', 'round_*')))
  return ledger_rounds(run_dir), checkpoints


def csv_rounds(run_dir: str) -> list[int]:
  return [int(row['round']) for row in resume.read_rows(
      os.path.join(run_dir, 'metrics.csv'))]


def run_attempt(args: list[str], *, env: dict[str, str],
                kill_after: Optional[float]) -> Attempt:
  """Runs one training subprocess, SIGKILLing it after `kill_after` s."""
  start = time.monotonic()
  process = subprocess.Popen(args, cwd=REPO_ROOT, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  lines = []  # (seconds since start, line)
  stderr_chunks = []

  def read_stdout():
    for line in process.stdout:
      lines.append((time.monotonic() - start, line.rstrip('\n')))

  def read_stderr():
    stderr_chunks.append(process.stderr.read())

  readers = [threading.Thread(target=read_stdout, daemon=True),
             threading.Thread(target=read_stderr, daemon=True)]
  for reader in readers:
    reader.start()
  killed_by_us = False
  try:
    process.wait(timeout=(_ATTEMPT_TIMEOUT_SECONDS if kill_after is None
                          else kill_after))
  except subprocess.TimeoutExpired:
    if kill_after is None:
      process.kill()
      process.wait()
      raise
    process.send_signal(signal.SIGKILL)
    killed_by_us = True
    process.wait()
  for reader in readers:
    reader.join(timeout=30)
  seconds = time.monotonic() - start

  resumed_after = first_round = None
  round_at = []
  for at, line in lines:
    match = _RESUMING.match(line)
    if match and resumed_after is None:
      resumed_after = int(match.group(1))
    match = _ROUND.match(line)
    if match:
      if first_round is None:
        first_round = int(match.group(1))
      round_at.append(at)
  return Attempt(
      returncode=process.returncode,
      killed_by_us=killed_by_us,
      seconds=seconds,
      first_round_at=round_at[0] if round_at else None,
      round_times=[b - a for a, b in zip(round_at, round_at[1:])],
      resumed_after=resumed_after,
      first_round=first_round,
      stderr=''.join(stderr_chunks),
      pid=process.pid)


class Timing:
  """Running estimate of an attempt's duration, to place random kills."""

  def __init__(self):
    # Until measured: generous guesses for this machine's smoke runs.
    self.startup = 20.0
    self.per_round = 2.0

  def update(self, attempt: Attempt) -> None:
    if attempt.first_round_at is not None:
      self.startup = attempt.first_round_at
    if attempt.round_times:
      self.per_round = sum(attempt.round_times) / len(attempt.round_times)

  def expected(self, rounds_left: int) -> float:
    return self.startup + self.per_round * rounds_left


def tensorboard_steps(run_dir: str) -> dict[str, list[int]]:
  """Scalar tag -> the steps of every event written for it."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # summary_iterator's deprecation notice is noise in the report.
  tf.get_logger().setLevel('ERROR')
  steps = collections.defaultdict(list)
  plugin = {}
  for path in sorted(glob.glob(os.path.join(run_dir, 'tensorboard',
                                            'events.*'))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        # TF2 writes the plugin (scalars, text) with a tag's first event only.
        if value.metadata.plugin_data.plugin_name:
          plugin.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
        steps[value.tag].append(event.step)
  return {tag: s for tag, s in steps.items()
          if plugin.get(tag, 'scalars') == 'scalars'}


def verify_run(run_dir: str, *, planned: int, event, delta: float,
               epsilons: dict[str, float]) -> tuple[list[str], int, int]:
  """Checks a completed run; returns (problems, epsilon checks, mismatches)."""
  problems = []
  checks = mismatches = 0
  try:
    with open(os.path.join(run_dir, 'summary.json')) as f:
      summary = json.load(f)
  except (OSError, ValueError) as e:
    return [f'summary.json unreadable: {e}'], 0, 0
  if summary.get('rounds') != planned:
    problems.append(f'summary rounds {summary.get("rounds")} != {planned}')
  if summary.get('rounds_planned') != planned:
    problems.append(f'summary rounds_planned {summary.get("rounds_planned")}'
                    f' != {planned}')
  try:
    ledger = accounting.PrivacyLedger.load(
        os.path.join(run_dir, 'ledger.json'))
  except (accounting.LedgerFormatError, OSError, ValueError) as e:
    ledger = None
    problems.append(f'ledger.json unreadable: {e}')
  if ledger is not None:
    if ledger.rounds != planned:
      problems.append(f'ledger rounds {ledger.rounds} != {planned}')
    if ledger.events != [event] * ledger.rounds:
      problems.append('ledger events differ from the configured round event')
  summary_eps = summary.get('epsilon') or {}
  for kind, expected in epsilons.items():
    checks += 1
    if summary_eps.get(kind) != expected:
      mismatches += 1
      problems.append(f'summary epsilon {kind} {summary_eps.get(kind)!r} != '
                      f'{expected!r}')
    if ledger is not None:
      checks += 1
      got = ledger.epsilon(delta=delta,
                           accountant=accounting.AccountantKind(kind))
      if got != expected:
        mismatches += 1
        problems.append(f'ledger epsilon {kind} {got!r} != {expected!r}')
  extra = sorted(set(summary_eps) - set(epsilons))
  if extra:
    problems.append(f'summary has unexpected accountants {extra}')

  rows = resume.read_rows(os.path.join(run_dir, 'metrics.csv'))
  rounds = [int(row['round']) for row in rows]
  if rounds != list(range(1, planned + 1)):
    problems.append(f'CSV rounds {rounds} != 1..{planned}')
  steps = tensorboard_steps(run_dir)
  tags = sorted({key for row in rows for key in row if key != 'round'})
  for tag in tags:
    released = sorted(int(row['round']) for row in rows
                      if row.get(tag) not in ('', None))
    if sorted(steps.get(tag, [])) != released:
      problems.append(f'TensorBoard steps of {tag} '
                      f'{sorted(steps.get(tag, []))} != CSV rounds {released}')
    if (tag.startswith(_EVERY_ROUND_PREFIXES) and
        released != list(range(1, planned + 1))):
      problems.append(f'{tag} released in rounds {released}, not every round')
  unknown = sorted(set(steps) - set(tags))
  if unknown:
    problems.append(f'TensorBoard scalars not in the CSV: {unknown}')
  left = workers_left(worker_pids(run_dir))
  if left:
    problems.append(f'TFF workers still running: {left}')
  return problems, checks, mismatches


def _train_args(output_dir: str, run_name: str, rounds: int) -> list[str]:
  return [sys.executable, '-m', 'tff_dp.train', f'--flagfile={SMOKE_CONFIG}',
          f'--rounds={rounds}', f'--output_dir={output_dir}',
          f'--run_name={run_name}']


def _environment(crash_at: Optional[str]) -> dict[str, str]:
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop(faults.ENV_VAR, None)
  if crash_at:
    env[faults.ENV_VAR] = crash_at
  return env


def _last_line(text: str) -> str:
  lines = [line for line in text.strip().splitlines() if line.strip()]
  return lines[-1] if lines else '(no output)'


def client_file_copies(pids: list[int]) -> list[str]:
  """The grouped path's client-file directories of these processes."""
  parent = tempfile.gettempdir()
  return sorted(os.path.join(parent, name) for name in os.listdir(parent)
                if any(name.startswith(f'tff-dp-clients-{pid}-')
                       for pid in pids))


def run_campaign(*, kills: int, seed: int, rounds: int, output_dir: str,
                 out=sys.stdout) -> bool:
  """Runs the campaign and prints its report; returns True if all passed."""
  attempt_pids = []
  rng = random.Random(seed)
  planned = rounds
  event, delta, epsilons = expected_epsilons(read_flagfile(SMOKE_CONFIG),
                                             planned)
  timing = Timing()
  kill_log: list[Kill] = []
  run_problems: dict[str, list[str]] = {}
  epsilon_checks = epsilon_mismatches = 0
  started = time.monotonic()

  run_number = 0
  while len(kill_log) < kills:
    run_number += 1
    run_name = 'campaign' if run_number == 1 else f'campaign-{run_number}'
    run_dir = os.path.join(output_dir, run_name)
    awaiting = []  # Kills whose resume has not started yet.
    failed = False
    while True:
      released = resume.released_rounds(
          run_dir, csv_path=os.path.join(run_dir, 'metrics.csv'))
      crash_at, kill_after = None, None
      # Once every round is released only the start-up and the summary are
      # left to interrupt: kill there sometimes, not until the kills run out
      # (which would spend most of them on that one window).
      if len(kill_log) < kills and (released < planned or
                                    rng.random() < _FINISHED_RUN_KILL_RATE):
        if rng.random() < 0.5 and released < planned:
          crash_at = (f'{rng.choice(faults.POINTS)}:'
                      f'{rng.randint(released + 1, planned)}')
        else:
          kill_after = rng.uniform(0, timing.expected(planned - released))
      before = disk_progress(run_dir)
      attempt = run_attempt(_train_args(output_dir, run_name, planned),
                            env=_environment(crash_at), kill_after=kill_after)
      timing.update(attempt)
      attempt_pids.append(attempt.pid)
      start = started_after(attempt,
                            progressed=disk_progress(run_dir) != before)
      if start is not None:
        for kill in awaiting:
          kill.resumed_after = start
        awaiting = []
      killed = attempt.returncode == -signal.SIGKILL and (
          attempt.killed_by_us or crash_at is not None)
      if killed:
        how = (f'timer {kill_after:.1f} s' if attempt.killed_by_us
               else crash_at)
        kill = Kill(
            number=len(kill_log) + 1, run_name=run_name, how=how,
            released_before=resume.released_rounds(
                run_dir, csv_path=os.path.join(run_dir, 'metrics.csv')),
            csv_before=max(csv_rounds(run_dir), default=0),
            charged_before=ledger_rounds(run_dir),
            workers_left=workers_left(worker_pids(run_dir)))
        kill_log.append(kill)
        awaiting.append(kill)
        print(f'kill {kill.number:2d}/{kills}: {run_name} {how:>24} after '
              f'{attempt.seconds:5.1f} s: {kill.released_before} rounds '
              f'released, {kill.charged_before} charged', file=out,
              flush=True)
        continue
      if attempt.returncode != 0:
        reason = (f'exit {attempt.returncode}: '
                  f'{_last_line(attempt.stderr)}')
        for kill in awaiting:
          kill.resume_error = reason
        run_problems[run_name] = [f'attempt failed, {reason}']
        print(f'{run_name}: attempt failed ({reason}); starting a new run',
              file=out, flush=True)
        failed = True
        break
      break  # Completed.
    if failed:
      if not any(kill.run_name == run_name for kill in kill_log):
        # It failed with no kill to blame: training itself is broken, and
        # every further run would fail the same way.
        print('aborting: training fails without any fault', file=out,
              flush=True)
        break
      continue
    for kill in awaiting:  # Completed without printing a round: impossible.
      kill.resume_error = 'the resumed run printed no start round'
    problems, checks, mismatches = verify_run(
        run_dir, planned=planned, event=event, delta=delta,
        epsilons=epsilons)
    epsilon_checks += checks
    epsilon_mismatches += mismatches
    run_problems[run_name] = problems
    verdict = '; '.join(problems) or 'all checks passed'
    print(f'{run_name}: completed, {verdict}', file=out, flush=True)
    if problems:
      for kill in kill_log:
        if kill.run_name == run_name and not kill.resume_error:
          kill.resume_error = 'the run failed its final checks'

  wall = time.monotonic() - started
  survived = sum(kill.survived for kill in kill_log)
  lost = [kill.rounds_lost for kill in kill_log]
  print(file=out)
  print(f'seed: {seed}; planned rounds per run: {planned}; runs: '
        f'{run_number}', file=out)
  print(f'survived: {survived}/{len(kill_log)}', file=out)
  for kill in kill_log:
    after = '?' if kill.resumed_after is None else kill.resumed_after
    print(f'  kill {kill.number:2d} {kill.run_name:12} {kill.how:>24}: '
          f'released {kill.released_before}, resumed after {after}', file=out)
  print('rounds lost per kill: '
        + ' '.join('?' if n is None else str(n) for n in lost), file=out)
  if any(n is not None and n < 0 for n in lost):
    # Not a failure: the round was computed, charged in its checkpoint's
    # ledger and kept; the final checks show it was released exactly once.
    print('  (negative: the resume continued from a checkpoint of a round '
          'that was charged but not yet released)', file=out)
  print(f'epsilon mismatches: {epsilon_mismatches} (of {epsilon_checks} '
        'exact comparisons)', file=out)
  for kill in kill_log:
    if not kill.survived:
      reasons = [kill.resume_error] if kill.resume_error else []
      if kill.workers_left:
        reasons.append(f'workers left {kill.workers_left}')
      if kill.charged_before < kill.csv_before:
        reasons.append(f'round {kill.csv_before} in the CSV but only '
                       f'{kill.charged_before} rounds charged in ledger.json')
      print(f'  kill {kill.number} ({kill.run_name}, {kill.how}) not '
            f'survived: {"; ".join(reasons) or "no resume observed"}',
            file=out)
  # A killed attempt cannot remove its temporary copy of the client data
  # (tff_dp.grouped_data); the next attempt must have.
  copies = client_file_copies(attempt_pids)
  print(f'client-data copies left by the attempts: {len(copies)} '
        f'{copies or ""}'.rstrip(), file=out)
  print(f'wall time: {wall:.0f} s', file=out, flush=True)
  return (survived == len(kill_log) and epsilon_mismatches == 0 and
          not any(run_problems.values()) and not copies)


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  seed = args.seed
  if seed is None:
    seed = random.SystemRandom().randrange(2**31)
  output_dir = args.output_dir or tempfile.mkdtemp(
      prefix='tff-dp-fault-campaign-')
  os.makedirs(output_dir, exist_ok=True)
  print(f'fault campaign: {args.kills} kills, seed {seed}, run directories '
        f'in {output_dir}', flush=True)
  ok = run_campaign(kills=args.kills, seed=seed, rounds=args.rounds,
                    output_dir=output_dir)
  if ok and not args.keep and args.output_dir is None:
    shutil.rmtree(output_dir, ignore_errors=True)
  elif not ok:
    print(f'FAILED; run directories kept in {output_dir}', flush=True)
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))

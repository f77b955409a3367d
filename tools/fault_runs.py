"""What every fault case checks runs with, and how it starts them.

Shared by the fault campaign's cases (`tools.fault_kills`,
`tools.fault_cases`, `tools.fault_files`):

* `expected_epsilons`: the round event, delta and epsilons the smoke
  config's flags imply, computed here, not read from anything a run wrote;
* `verify_run` checks a completed smoke run against them: rounds and ledger
  events as planned, the epsilon of every accountant exactly, metrics.csv
  and TensorBoard each holding every round once, no TFF worker left;
* small helpers: the training command, its environment (with a fault point,
  or without TensorFlow), worker pids from worker.log, what ledger.json and
  metrics.csv hold, every file of a directory.
"""

import collections
import glob
import json
import os
import re
import sys
import tempfile
import time
from typing import Optional

from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.program import faults
from tff_dp.program import resume

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE_CONFIG = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
# The line tff_dp.execution.worker_launch writes to worker.log for every worker it
# starts (worker_launch.WORKER_LOG_PREFIX; not imported: that would import TFF
# here).
_WORKER_LINE = re.compile(r'tff-dp: started TFF worker pid (\d+)')
_WORKER_GONE_SECONDS = 15.0
# Per-round tag groups that are released every round (eval/ may skip rounds
# with --eval_every; checked against the CSV instead).
_EVERY_ROUND_PREFIXES = ('privacy/epsilon_', 'time/', 'cohort/')


def read_flagfile(path: str) -> dict[str, str]:
  """The `--key=value` lines of a flagfile."""
  flags = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith('--') and '=' in line:
        key, value = line[2:].split('=', 1)
        flags[key] = value
  return flags


def expected_epsilons(flags: dict[str, str],
                      rounds: int) -> tuple[object, float, dict[str, float]]:
  """(round event, delta, {accountant: epsilon of `rounds` rounds}).

  Computed from the flags given to the program, not from anything the run
  wrote, so that a run that charged the wrong event is caught too.
  """
  sampling = accounting.ClientSampling(flags['client_sampling'])
  event = accounting.gaussian_round_event(
      sampling=sampling,
      population=int(flags['num_clients']),
      clients_per_round=int(flags['clients_per_round']),
      noise_multiplier=float(flags['noise_multiplier']))
  kinds = [
      accounting.AccountantKind(k)
      for k in flags.get('accountants', ','.join(
          k.value for k in accounting.AccountantKind)).split(',')
  ]
  relation = accounting.neighboring_relation(sampling)
  return event, float(flags['delta']), {
      kind.value:
          accounting.compute_epsilon([event] * rounds,
                                     delta=float(flags['delta']),
                                     accountant=kind,
                                     relation=relation) for kind in kinds
  }


def worker_pids(run_dir: str) -> list[int]:
  """Every TFF worker the run's processes started, from its worker.log."""
  path = os.path.join(run_dir, 'worker.log')
  if not os.path.isfile(path):
    return []
  with open(path, errors='replace') as f:
    return [int(pid) for pid in _WORKER_LINE.findall(f.read())]


def is_running_worker(pid: int) -> bool:
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
  alive = [pid for pid in pids if is_running_worker(pid)]
  while alive and time.monotonic() < deadline:
    time.sleep(0.1)
    alive = [pid for pid in alive if is_running_worker(pid)]
  return alive


def ledger_rounds(run_dir: str) -> int:
  """The rounds ledger.json charges (0 if it is missing or unreadable)."""
  path = os.path.join(run_dir, 'ledger.json')
  if not os.path.isfile(path):
    return 0
  try:
    return privacy_ledger.PrivacyLedger.load(path).rounds
  except (accounting.LedgerFormatError, OSError, ValueError):
    return 0


def disk_progress(run_dir: str) -> tuple[int, list[str]]:
  """What rounds leave on disk before their release: ledger and checkpoints."""
  checkpoints = sorted(
      os.path.basename(path)
      for path in glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))
  return ledger_rounds(run_dir), checkpoints


def csv_rounds(run_dir: str) -> list[int]:
  return [
      int(row['round'])
      for row in resume.read_rows(os.path.join(run_dir, 'metrics.csv'))
  ]


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
  return {
      tag: s
      for tag, s in steps.items()
      if plugin.get(tag, 'scalars') == 'scalars'
  }


def _check_privacy(run_dir: str, summary: dict, *, planned: int, event,
                   delta: float,
                   epsilons: dict[str, float]) -> tuple[list[str], int, int]:
  """Ledger and summary against the flags: (problems, checks, mismatches)."""
  problems = []
  checks = mismatches = 0
  try:
    ledger = privacy_ledger.PrivacyLedger.load(
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
  return problems, checks, mismatches


def _check_releases(run_dir: str, *, planned: int) -> list[str]:
  """Every round in metrics.csv once, and in TensorBoard as in the CSV."""
  problems = []
  rows = resume.read_rows(os.path.join(run_dir, 'metrics.csv'))
  rounds = [int(row['round']) for row in rows]
  if rounds != list(range(1, planned + 1)):
    problems.append(f'CSV rounds {rounds} != 1..{planned}')
  steps = tensorboard_steps(run_dir)
  tags = sorted({key for row in rows for key in row if key != 'round'})
  for tag in tags:
    released = sorted(
        int(row['round']) for row in rows if row.get(tag) not in ('', None))
    if sorted(steps.get(tag, [])) != released:
      problems.append(f'TensorBoard steps of {tag} '
                      f'{sorted(steps.get(tag, []))} != CSV rounds {released}')
    if (tag.startswith(_EVERY_ROUND_PREFIXES) and
        released != list(range(1, planned + 1))):
      problems.append(f'{tag} released in rounds {released}, not every round')
  unknown = sorted(set(steps) - set(tags))
  if unknown:
    problems.append(f'TensorBoard scalars not in the CSV: {unknown}')
  return problems


def verify_run(run_dir: str, *, planned: int, event, delta: float,
               epsilons: dict[str, float]) -> tuple[list[str], int, int]:
  """Checks a completed run; returns (problems, epsilon checks, mismatches)."""
  try:
    with open(os.path.join(run_dir, 'summary.json')) as f:
      summary = json.load(f)
  except (OSError, ValueError) as e:
    return [f'summary.json unreadable: {e}'], 0, 0
  problems = []
  if summary.get('rounds') != planned:
    problems.append(f'summary rounds {summary.get("rounds")} != {planned}')
  if summary.get('rounds_planned') != planned:
    problems.append(f'summary rounds_planned {summary.get("rounds_planned")}'
                    f' != {planned}')
  privacy, checks, mismatches = _check_privacy(run_dir,
                                               summary,
                                               planned=planned,
                                               event=event,
                                               delta=delta,
                                               epsilons=epsilons)
  problems += privacy
  try:
    problems += _check_releases(run_dir, planned=planned)
  except resume.ResumeError as e:
    problems.append(str(e))
  left = workers_left(worker_pids(run_dir))
  if left:
    problems.append(f'TFF workers still running: {left}')
  return problems, checks, mismatches


def train_args(output_dir: str, run_name: str, rounds: int) -> list[str]:
  """The training command of the smoke config, as a user would type it.

  With a line for every round (--log_every=1: a long run prints about 50),
  which the kill loop times rounds by (`fault_kills.Timing`).
  """
  return [
      sys.executable, '-m', 'tff_dp.cli.train', f'--flagfile={SMOKE_CONFIG}',
      f'--rounds={rounds}', f'--output_dir={output_dir}',
      f'--run_name={run_name}', '--log_every=1'
  ]


def environment(crash_at: Optional[str] = None, **extra: str) -> dict[str, str]:
  """The programs' environment: quiet TF, a fault point only if asked."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  env.pop(faults.ENV_VAR, None)
  if crash_at:
    env[faults.ENV_VAR] = crash_at
  env.update(extra)
  return env


def without_tensorflow(directory: str) -> dict[str, str]:
  """An environment in which importing TensorFlow fails loudly.

  A refusal checked in it happened before TensorFlow was imported (seconds
  of start-up a refused resume must not pay).
  """
  fake = os.path.join(directory, 'no-tensorflow', 'tensorflow')
  os.makedirs(fake, exist_ok=True)
  with open(os.path.join(fake, '__init__.py'), 'w') as f:
    f.write('raise ImportError("TensorFlow imported before the check")\n')
  return environment(PYTHONPATH=os.path.dirname(fake))


def last_line(text: str) -> str:
  lines = [line for line in text.strip().splitlines() if line.strip()]
  return lines[-1] if lines else '(no output)'


def client_file_copies(pids: list[int]) -> list[str]:
  """The grouped path's client-data directories of these processes."""
  parent = tempfile.gettempdir()
  return sorted(
      os.path.join(parent, name) for name in os.listdir(parent) if any(
          name.startswith(f'tff-dp-clients-{pid}-') for pid in pids))


def files(directory: str) -> dict[str, bytes]:
  """Every file under `directory` (hidden ones included) -> its bytes."""
  result = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        result[os.path.relpath(path, directory)] = f.read()
  return result

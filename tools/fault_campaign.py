"""Fault campaign: kill, starve and tamper with training; check what survives.

  .venv/bin/python -m tools.fault_campaign [--kills 20]
      [--worker_kills 5] [--disk_fulls 3] [--cases kills,worker-kill,...]
      [--quick] [--seed S] [--rounds 8] [--output_dir DIR] [--keep]

From the repository root (as root for the disk-full case: it mounts a small
tmpfs; otherwise that case is skipped and says why). One process at a time
(the machine has 2 cores); every program the campaign starts has a deadline,
and one that misses it is a hang: stopped and counted. The cases (--cases,
all by default; tools/README.md, "Fault campaign", says what each
checks):

* kills: the trainer SIGKILLed at random moments and named fault points,
  then resumed (`tools.fault_kills`);
* worker-kill, disk-full: its TFF worker SIGKILLed; its disk full
  (`tools.fault_cases`);
* corrupt, foreign, ledger, sqlite: a corrupt newest checkpoint, a foreign
  checkpoint, an edited ledger.json, crafted --client_data files
  (`tools.fault_files`, `tools.fault_sqlite`).

The report counts each case, the hangs and the TFF workers left running.
The exit code is 0 only if every count is full, nothing hung and nothing was
left behind. Run directories go to a temporary directory (or --output_dir)
that is removed unless --keep is given or a check failed.
"""

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

from tools import fault_cases
from tools import fault_context
from tools import fault_files
from tools import fault_kills
from tools import fault_runs

CASES = ('kills', 'worker-kill', 'disk-full', 'corrupt', 'foreign', 'ledger',
         'sqlite')
# The cases that work on the reference run (and its twin).
_NEED_REFERENCE = ('worker-kill', 'disk-full', 'corrupt', 'foreign', 'ledger')


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog='python -m tools.fault_campaign',
      description='Kills, starves and tampers with training; checks resumes '
      'and refusals. See tools/README.md, "Fault campaign".')
  parser.add_argument('--kills',
                      type=int,
                      default=20,
                      help='SIGKILLs of the trainer (default 20)')
  parser.add_argument('--worker_kills',
                      type=int,
                      default=5,
                      help='SIGKILLs of a run\'s TFF worker (default 5)')
  parser.add_argument('--disk_fulls',
                      type=int,
                      default=3,
                      help='runs on a full disk (default 3; needs root)')
  parser.add_argument('--cases',
                      default=','.join(CASES),
                      help=f'comma-separated cases to run (default all: '
                      f'{",".join(CASES)})')
  parser.add_argument('--quick',
                      action='store_true',
                      help='one variant of each file case (corrupt, foreign, '
                      'ledger, sqlite)')
  parser.add_argument('--seed',
                      type=int,
                      default=None,
                      help='random seed (default: drawn and printed)')
  parser.add_argument('--rounds',
                      type=int,
                      default=8,
                      help='rounds of each smoke run (default 8)')
  parser.add_argument('--output_dir',
                      default=None,
                      help='where run directories go (default: a temporary '
                      'directory)')
  parser.add_argument('--keep',
                      action='store_true',
                      help='keep the run directories')
  args = parser.parse_args(argv[1:])
  for name in ('kills', 'worker_kills', 'disk_fulls'):
    if getattr(args, name) < 0:
      parser.error(f'--{name}={getattr(args, name)}: must be at least 0')
  if args.rounds < 2:
    parser.error(f'--rounds={args.rounds}: must be at least 2')
  args.cases = [case.strip() for case in args.cases.split(',') if case.strip()]
  unknown = sorted(set(args.cases) - set(CASES))
  if unknown or not args.cases:
    parser.error(f'--cases: unknown {unknown}; choose from {",".join(CASES)}')
  return args


def run_cases(ctx: fault_context.Context,
              args: argparse.Namespace) -> list[fault_context.Count]:
  """Runs the cases other than the kill loop; returns their counts."""
  if any(case in args.cases for case in _NEED_REFERENCE):
    problems = fault_cases.prepare(ctx, twin='foreign' in args.cases)
    if problems:
      count = fault_context.Count('reference runs')
      count.add('reference and twin', problems)
      return [count]
  steps = [
      ('worker-kill', lambda: fault_cases.worker_kills(ctx, args.worker_kills)),
      ('disk-full', lambda: fault_cases.disk_fulls(ctx, args.disk_fulls)),
      ('corrupt', lambda: fault_files.corruptions(ctx)),
      ('foreign', lambda: fault_files.foreign_checkpoints(ctx)),
      ('ledger', lambda: fault_files.edited_ledgers(ctx)),
      ('sqlite', lambda: fault_files.hostile_client_ids(ctx)),
      ('sqlite', lambda: fault_files.bad_inputs(ctx)),
  ]
  return [step() for case, step in steps if case in args.cases]


def print_report(counts: list[fault_context.Count],
                 *,
                 hangs: list[str],
                 workers: set[int],
                 copies: list[str],
                 wall: float,
                 out=sys.stdout) -> bool:
  """Prints the campaign's report; returns True if everything passed."""
  left = fault_runs.workers_left(sorted(workers), timeout=5)
  print('\nfault campaign report', file=out)
  for count in counts:
    print(f'  {count.line()}', file=out)
  print(f'  hangs: {len(hangs)}', file=out)
  print(f'  TFF workers left running: {len(left)} (of {len(workers)} '
        f'started) {left or ""}'.rstrip(),
        file=out)
  print(f'  client-data copies left: {len(copies)} {copies or ""}'.rstrip(),
        file=out)
  print(f'  wall time: {wall:.0f} s', file=out)
  failures = [f for count in counts for f in count.failures] + hangs
  for failure in failures:
    print(f'  FAILED: {failure}', file=out)
  out.flush()
  return not failures and not left and not copies


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  seed = args.seed
  if seed is None:
    seed = random.SystemRandom().randrange(2**31)
  output_dir = os.path.abspath(
      args.output_dir or tempfile.mkdtemp(prefix='tff-dp-fault-campaign-'))
  os.makedirs(output_dir, exist_ok=True)
  print(
      f'fault campaign: cases {",".join(args.cases)}; {args.kills} kills, '
      f'{args.worker_kills} worker kills, {args.disk_fulls} disk-full runs, '
      f'seed {seed}, run directories in {output_dir}',
      flush=True)
  started = time.monotonic()
  rng = random.Random(seed)
  counts, hangs, workers, pids = [], [], set(), []
  if 'kills' in args.cases and args.kills:
    loop = fault_kills.KillLoop(kills=args.kills,
                                rng=rng,
                                rounds=args.rounds,
                                output_dir=os.path.join(output_dir, 'kills'))
    loop.run()
    counts.append(loop.report(seed))
    hangs, pids = loop.hangs, loop.attempt_pids
    workers.update(loop.worker_pids())
  ctx = fault_context.Context(output_dir=output_dir,
                              rounds=args.rounds,
                              rng=rng,
                              quick=args.quick)
  counts += run_cases(ctx, args)
  # A killed attempt cannot remove its temporary copy of the client data
  # (tff_dp.algorithms.grouped_data); a later one must have.
  ok = print_report(counts,
                    hangs=hangs + ctx.hangs,
                    workers=workers | ctx.workers,
                    copies=fault_runs.client_file_copies(pids + ctx.pids),
                    wall=time.monotonic() - started)
  if ok and not args.keep and args.output_dir is None:
    shutil.rmtree(output_dir, ignore_errors=True)
  elif not ok:
    print(f'FAILED; run directories kept in {output_dir}', flush=True)
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main(sys.argv))

"""Trains every mechanism's config and tabulates accuracy and guarantees.

  .venv/bin/python -m tools.mechanism_table [--configs a.cfg,b.cfg]
      [--rounds N] [--seeds N] [--write_readme] [--write_configs]

Each config runs through the real program (`python -m tff_dp.cli.train`), one
after the other, with its own rounds unless --rounds is given, --seeds times
(--seed=0, 1, ...: the model's initialization; the noise and the cohorts are
fresh from the operating system in every run anyway); the table (test accuracy:
the mean, the standard deviation and the range over the runs; the central
guarantee, the local and record-level epsilons (the worst run's), rounds, the
program's mean wall time from start to exit) is printed as Markdown and written to
benchmarks/results/mechanisms-<UTC time>.json. --write_readme replaces the
README's table between its `mechanism-table` markers; --write_configs writes
each config's "# Measured (...)" header line (`tools.measured_headers`).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from tff_dp.sweeps import report
from tff_dp.sweeps import results
from tools import measured_headers

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIGS = ('default.cfg', 'nonprivate.cfg', 'fixed_clip.cfg',
                    'weighted_dp.cfg', 'local_laplace.cfg',
                    'local_gaussian.cfg', 'client_server.cfg', 'fedsgd.cfg',
                    'fedsgd_dp.cfg', 'dp_ftrl.cfg', 'fedprox.cfg',
                    'server_adam.cfg', 'server_yogi.cfg', 'example_dp.cfg',
                    'cross_silo.cfg', 'cross_device.cfg')
_START = '<!-- mechanism-table:start -->\n'
_END = '<!-- mechanism-table:end -->'


def _run(config: str, output_dir: str, rounds, seed: int = 0) -> dict:
  args = [
      sys.executable, '-m', 'tff_dp.cli.train',
      f'--flagfile={os.path.join(_ROOT, "configs", config)}',
      f'--output_dir={output_dir}', f'--run_name={config}-{seed}',
      f'--seed={seed}'
  ]
  if rounds:
    args.append(f'--rounds={rounds}')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  start = time.monotonic()
  result = subprocess.run(args,
                          cwd=_ROOT,
                          env=env,
                          capture_output=True,
                          text=True)
  # Timed here: a DP run does not release its own wall time (it grows with
  # the hidden cohorts), and this table is a measurement, not a release.
  seconds = time.monotonic() - start
  if result.returncode != 0:
    return {'config': config, 'error': result.stderr.strip()[-500:]}
  with open(os.path.join(output_dir, f'{config}-{seed}', 'summary.json')) as f:
    return {
        'config': config,
        'summary': json.load(f),
        'process_seconds': seconds
    }


def _worst(summaries: list[dict], key: str):
  values = [s[key] for s in summaries if s[key] is not None]
  return max(values) if values else None


def _run_seeds(config: str, output_dir: str, rounds, seeds: int) -> dict:
  """The config's runs, one per seed, as one row (or the first error)."""
  runs = []
  for seed in range(seeds):
    run = _run(config, output_dir, rounds, seed)
    if 'error' in run:
      return run
    runs.append(run)
  summaries = [run['summary'] for run in runs]
  # The planned epsilons are the same in every run; what a run realizes
  # (the local and record-level epsilons of its busiest client) is not.
  summary = dict(summaries[0],
                 local_epsilon=_worst(summaries, 'local_epsilon'),
                 record_level_epsilon=_worst(summaries, 'record_level_epsilon'))
  return {
      'config': config,
      'summary': summary,
      'accuracies': [s['accuracy'] for s in summaries],
      'process_seconds': statistics.mean(r['process_seconds'] for r in runs),
      'runs': runs,
  }


def _accuracy(accuracies: list[float]) -> str:
  if len(accuracies) == 1:
    return _fmt(accuracies[0])
  # The sweep's tables write the same mean ± sd (range).
  return report.accuracy_text(results.stats(accuracies))


def _fmt(value, digits=4):
  return 'n/a' if value is None else f'{value:.{digits}g}'


def _table(rows: list[dict]) -> str:
  lines = [
      '| config | test accuracy (mean ± sd (range)) | central guarantee '
      '(epsilon, delta) | '
      'local epsilon | record-level epsilon | rounds | wall time |',
      '| --- | --- | --- | --- | --- | --- | --- |'
  ]
  for row in rows:
    if 'error' in row:
      lines.append(f"| `{row['config']}` | failed: {row['error'][:80]} "
                   '| | | | | |')
      continue
    s = row['summary']
    if s['guarantee_epsilon'] is not None:
      central = (f"({_fmt(s['guarantee_epsilon'])}, {s['delta']:g}) "
                 f"{s['guarantee_accountant'].upper()}")
    else:
      central = 'none' if s['private'] else 'none (not private)'
    lines.append(
        f"| `{row['config']}` | {_accuracy(row['accuracies'])} | {central} | "
        f"{_fmt(s['local_epsilon'])} | {_fmt(s['record_level_epsilon'])} | "
        f"{s['rounds']} | {row['process_seconds']:.0f} s |")
  return '\n'.join(lines) + '\n'


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--configs', default=','.join(_DEFAULT_CONFIGS))
  parser.add_argument('--rounds', type=int, default=None)
  parser.add_argument('--seeds', type=int, default=1)
  parser.add_argument('--write_readme', action='store_true')
  parser.add_argument('--write_configs', action='store_true')
  args = parser.parse_args()
  if args.write_configs and args.rounds:
    parser.error('--write_configs measures each config with its own rounds: '
                 'drop --rounds')
  configs = [c for c in args.configs.split(',') if c]
  started = datetime.datetime.now(datetime.timezone.utc)
  started_clock = time.monotonic()
  rows = []
  with tempfile.TemporaryDirectory() as output_dir:
    for config in configs:
      row = _run_seeds(config, output_dir, args.rounds, args.seeds)
      rows.append(row)
      print(f"{config}: {'failed' if 'error' in row else 'done'}", flush=True)
  table = _table(rows)
  print(table)
  results = os.path.join(_ROOT, 'benchmarks', 'results')
  os.makedirs(results, exist_ok=True)
  path = os.path.join(results,
                      f'mechanisms-{started.strftime("%Y%m%d-%H%M%S")}.json')
  with open(path, 'w') as f:
    json.dump(
        {
            'command': ' '.join(sys.argv),
            'started_utc': str(started),
            'rows': rows
        },
        f,
        indent=1)
  print(f'wrote {path}')
  if args.write_configs:
    for row in rows:
      if 'error' not in row:
        print(
            measured_headers.write_measured_line(
                os.path.join(_ROOT, 'configs', row['config']),
                row['summary'],
                date=started.strftime('%Y-%m-%d'),
                accuracies=row['accuracies']))
  if args.write_readme:
    readme = os.path.join(_ROOT, 'README.md')
    with open(readme) as f:
      text = f.read()
    start = text.index(_START) + len(_START)
    end = text.index(_END)
    command = ('.venv/bin/python -m tools.mechanism_table '
               '--write_readme' +
               (' --write_configs' if args.write_configs else '') +
               (f' --seeds={args.seeds}' if args.seeds > 1 else '') +
               (f' --rounds={args.rounds}' if args.rounds else ''))
    runs = ('one run each' if args.seeds == 1 else
            f'{args.seeds} runs each, --seed=0..{args.seeds - 1}')
    total = time.monotonic() - started_clock
    block = (f'Measured {started.strftime("%Y-%m-%d")} on the 2-core machine '
             f'with `{command}` (each config with its own settings; {runs}; '
             f'{total / 60:.0f} minutes in all):\n\n' + table)
    with open(readme, 'w') as f:
      f.write(text[:start] + block + text[end:])
  return 0 if all('error' not in row for row in rows) else 1


if __name__ == '__main__':
  sys.exit(main())

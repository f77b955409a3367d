"""Runs the README's language-model table: full fine-tuning vs LoRA vs head.

  .venv/bin/python -m tools.lm_table [--out_dir lm_table] [--epsilons 4,2,8,none]
      [--rows all,lora4,lora16,ffa_lora4,head] [--repeats all:4,lora4:4]
      [--table_only] [--write_readme]

One central pretraining of the 4 x 192 transformer on python_stdlib's public
modules (`./run.sh pretrain`, 300 steps; reused by every row), then one private
fine-tuning per (row, epsilon): 20 rounds of 10 clients, `--clients_per_call=1
--client_learning_rate=0.1`, configs/default.cfg's server settings
(DP-FedAvg with adaptive clipping), `--target_epsilon=E` (or
`--dp_mechanism=none`), each through the real program (`python -m
tff_dp.cli.train`), one process at a time, under `nice -n 19` (the machine's
cores are shared: accuracy does not depend on load, seconds do).

Rows: `all`; `lora` rank 4 and 16 (alpha = rank, scale 1); `ffa_lora` rank 4;
`head`. `--repeats=row:eps,...` adds a second run of those cells with
`--seed=1` (the LoRA A matrices and the clients' data order; cohorts and noise
come from the operating system's entropy in every run anyway).

Measured, never typed: each cell is read from its run's own files. Trained
parameters and upload bytes from summary.json's `model`; accuracy is
summary.json's final test accuracy; seconds per round the median of
metrics.csv's `nonprivate/round_seconds` (the runs pass
`--release_nonprivate_metrics`: a measurement, not a deployment); peak memory
the largest sum of the RSS of the training process and its children (the TFF
worker), polled with psutil every 0.5 s by this driver and written to the
run's `lm_table.json` with the load averages seen during the run; z and
the epsilon reached from config.json and summary.json. Finished
runs (a summary.json) are skipped, so the command resumes an interrupted
grid; `--table_only` prints the table of what exists, cells without a run
marked 'not measured'; `--write_readme` also puts it in README.md between the
`lm-table` markers.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Optional

import psutil

from tff_dp.program import metrics_file

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FLAGS = ('--dataset=python_stdlib', '--model=transformer',
               '--transformer_layers=4', '--transformer_width=192')
PRETRAIN_FLAGS = ('--steps=300',)
TRAIN_FLAGS = ('--flagfile=configs/default.cfg', '--rounds=20',
               '--clients_per_round=10', '--clients_per_call=1',
               '--client_learning_rate=0.1')
# Row name -> (its label in the table, its --trainable flags).
ROWS = {
    'all': ('`all`', ('--trainable=all',)),
    'lora4': ('`lora`, rank 4 (alpha 4)', ('--trainable=lora', '--lora_rank=4',
                                           '--lora_alpha=4')),
    'lora16': ('`lora`, rank 16 (alpha 16)',
               ('--trainable=lora', '--lora_rank=16', '--lora_alpha=16')),
    'ffa_lora4': ('`ffa_lora`, rank 4 (alpha 4)',
                  ('--trainable=ffa_lora', '--lora_rank=4', '--lora_alpha=4')),
    'head': ('`head`', ('--trainable=head',)),
}
EPSILONS = ('none', '2', '4', '8')
_POLL_SECONDS = 0.5
_START = '<!-- lm-table:start -->\n'
_END = '<!-- lm-table:end -->'


def privacy_flags(epsilon: str) -> tuple[str, ...]:
  """The flags of one privacy column: 'none' or a target epsilon."""
  if epsilon == 'none':
    return ('--dp_mechanism=none',)
  return (f'--target_epsilon={epsilon}', '--release_nonprivate_metrics')


def run_name(row: str, epsilon: str, seed: int) -> str:
  return f'{row}-eps{epsilon}-seed{seed}'


def train_command(row: str, epsilon: str, seed: int, pretrained: str,
                  runs_dir: str) -> list[str]:
  """The training command of one cell (`./run.sh train` with these flags)."""
  return (list(TRAIN_FLAGS) + list(MODEL_FLAGS) +
          [f'--init_from={pretrained}'] + list(ROWS[row][1]) +
          list(privacy_flags(epsilon)) + [
              f'--seed={seed}', f'--output_dir={runs_dir}',
              f'--run_name={run_name(row, epsilon, seed)}'
          ])


def _tree_rss(process: psutil.Process) -> int:
  """Bytes of RSS of `process` and its descendants (0 for vanished ones)."""
  total = 0
  try:
    members = [process] + process.children(recursive=True)
  except psutil.Error:
    return 0
  for member in members:
    try:
      total += member.memory_info().rss
    except psutil.Error:
      pass
  return total


def run_measured(args: list[str], log_path: str) -> dict[str, Any]:
  """Runs `args` under nice -n 19, polling the RSS of its process tree."""
  loads = [os.getloadavg()[0]]
  start = time.monotonic()
  with open(log_path, 'w', encoding='utf-8') as log:
    child = subprocess.Popen(['nice', '-n', '19', sys.executable] + args,
                             cwd=_ROOT,
                             stdout=log,
                             stderr=subprocess.STDOUT,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    process = psutil.Process(child.pid)
    peak = 0
    polls = 0
    while child.poll() is None:
      peak = max(peak, _tree_rss(process))
      polls += 1
      if polls % 20 == 0:
        loads.append(os.getloadavg()[0])
      time.sleep(_POLL_SECONDS)
  loads.append(os.getloadavg()[0])
  return {
      'returncode': child.returncode,
      'process_seconds': round(time.monotonic() - start, 1),
      'peak_tree_rss_mb': round(peak / 2**20, 1),
      'load_average_1min': [min(loads), max(loads)],
  }


def pretrain(out_dir: str) -> str:
  """The shared checkpoint directory (pretrained once, then reused)."""
  path = os.path.join(out_dir, 'pretrained')
  if os.path.exists(os.path.join(path, 'pretrained.json')):
    return path
  os.makedirs(out_dir, exist_ok=True)
  args = (['-m', 'tff_dp.cli.pretrain'] + list(MODEL_FLAGS) +
          list(PRETRAIN_FLAGS) + [f'--output={path}'])
  print('pretrain: ./run.sh pretrain ' + ' '.join(args[2:]), flush=True)
  result = run_measured(args, os.path.join(out_dir, 'pretrain.log'))
  if result['returncode'] != 0:
    sys.exit(f'pretraining failed (exit {result["returncode"]}); see '
             f'{out_dir}/pretrain.log')
  with open(os.path.join(path, 'lm_table.json'), 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=2)
  return path


def run_cell(out_dir: str, pretrained: str, row: str, epsilon: str,
             seed: int) -> None:
  """Trains one cell unless its run already finished."""
  runs_dir = os.path.join(out_dir, 'runs')
  name = run_name(row, epsilon, seed)
  run_dir = os.path.join(runs_dir, name)
  if os.path.exists(os.path.join(run_dir, 'summary.json')):
    return
  if os.path.exists(run_dir):
    # An interrupted run: start it again, not resume it (its seconds and
    # memory would be those of the remaining rounds only).
    shutil.rmtree(run_dir)
  args = train_command(row, epsilon, seed, pretrained, runs_dir)
  print(f'{name}: ./run.sh train ' + ' '.join(args), flush=True)
  os.makedirs(runs_dir, exist_ok=True)
  result = run_measured(['-m', 'tff_dp.cli.train'] + args,
                        os.path.join(runs_dir, f'{name}.log'))
  print(
      f'{name}: exit {result["returncode"]} after '
      f'{result["process_seconds"]} s, peak {result["peak_tree_rss_mb"]} '
      f'MiB',
      flush=True)
  if result['returncode'] == 0:
    with open(os.path.join(run_dir, 'lm_table.json'), 'w',
              encoding='utf-8') as f:
      json.dump(result, f, indent=2)


def read_cell(out_dir: str, row: str, epsilon: str,
              seed: int) -> Optional[dict[str, Any]]:
  """A finished cell's numbers, read from its run's files; None if absent.

  Raises:
    metrics_file.MetricsFileError: If the run's metrics.csv is missing or
      not one tff-dp wrote (naming the file and line).
  """
  run_dir = os.path.join(out_dir, 'runs', run_name(row, epsilon, seed))
  try:
    with open(os.path.join(run_dir, 'summary.json'), encoding='utf-8') as f:
      summary = json.load(f)
    with open(os.path.join(run_dir, 'config.json'), encoding='utf-8') as f:
      config = json.load(f)
    with open(os.path.join(run_dir, 'lm_table.json'), encoding='utf-8') as f:
      measured = json.load(f)
    # A run killed mid-append leaves a cut last line: not a round.
    rounds = metrics_file.read(os.path.join(run_dir, 'metrics.csv'),
                               key_fieldname='round').rows
    seconds = [
        float(r['nonprivate/round_seconds'])
        for r in rounds
        if r.get('nonprivate/round_seconds')
    ]
  except OSError:
    return None
  return {
      'accuracy': summary['accuracy'],
      'first_accuracy': (float(rounds[0]['eval/accuracy']) if rounds and
                         rounds[0].get('eval/accuracy') else None),
      'epsilon': summary['guarantee_epsilon'],
      'noise_multiplier': config['noise_multiplier'],
      'model': summary['model'],
      'seconds': statistics.median(seconds) if seconds else None,
      'peak_gib': measured['peak_tree_rss_mb'] / 1024,
      'loads': measured['load_average_1min'],
  }


def _cell_text(cells: list[dict[str, Any]]) -> str:
  """'accuracy; seconds; memory' of a cell's runs, a second seed after ' / '."""
  if not cells:
    return 'not measured'
  accuracy = ' / '.join(f"{c['accuracy']:.4f}" for c in cells)
  seconds = ' / '.join(f"{c['seconds']:.1f}" for c in cells)
  memory = ' / '.join(f"{c['peak_gib']:.1f}" for c in cells)
  return f'{accuracy}; {seconds} s; {memory} GiB'


def _cells(out_dir: str, row: str, epsilon: str) -> list[dict[str, Any]]:
  found = (read_cell(out_dir, row, epsilon, seed) for seed in (0, 1))
  return [c for c in found if c is not None]


def table(out_dir: str, rows: list[str], epsilons: list[str]) -> str:
  """The Markdown table of every finished run under `out_dir`, and notes:
  the load average seen, each column's noise multiplier and epsilon."""
  header = [
      '`--trainable`', 'trained parameters (= noise dimension)',
      'upload bytes per client and round'
  ] + [('non-private' if e == 'none' else f'epsilon {e}') for e in epsilons]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + ' --- |' * len(header)]
  loads, columns = [], {e: [] for e in epsilons}
  for row in rows:
    by_epsilon = {e: _cells(out_dir, row, e) for e in epsilons}
    found = [c for cells in by_epsilon.values() for c in cells]
    model = found[0]['model'] if found else None
    size = ([
        f"{model['trainable_parameters']:,}",
        f"{model['upload_bytes_per_client_round']:,}"
    ] if model else ['not measured'] * 2)
    line = [ROWS[row][0]] + size + [_cell_text(by_epsilon[e]) for e in epsilons]
    lines.append('| ' + ' | '.join(line) + ' |')
    for epsilon, cells in by_epsilon.items():
      columns[epsilon].extend(cells)
      loads.extend(x for c in cells for x in c['loads'])
  if loads:
    lines += [
        '', 'Each cell: final test accuracy; median seconds per round; peak '
        'RSS of the process tree (a run with --seed=1 after a " / "). Load '
        f'average (1 min) during the runs: {min(loads):.1f} to '
        f'{max(loads):.1f}.'
    ]
  lines += _pretraining_note(out_dir)
  first = [
      c['first_accuracy']
      for cells in columns.values()
      for c in cells
      if c['first_accuracy'] is not None
  ]
  if first:
    lines.append('Test accuracy after round 1 (one round from the pretrained '
                 f'model): {min(first):.4f} to {max(first):.4f}.')
  for epsilon in epsilons:
    cells = columns[epsilon]
    if epsilon != 'none' and cells:
      z = sorted({c['noise_multiplier'] for c in cells})
      reached = [c['epsilon'] for c in cells if c['epsilon'] is not None]
      lines.append(f'epsilon {epsilon}: z = '
                   f"{', '.join(f'{v:.4g}' for v in z)}; epsilon reached "
                   f'(the smaller of PLD and RDP) {min(reached):.3f} to '
                   f'{max(reached):.3f}.')
  return '\n'.join(lines)


def _pretraining_note(out_dir: str) -> list[str]:
  """The shared pretraining's steps, time and memory, if it finished."""
  path = os.path.join(out_dir, 'pretrained')
  try:
    with open(os.path.join(path, 'pretrained.json'), encoding='utf-8') as f:
      training = json.load(f)['training']
    with open(os.path.join(path, 'lm_table.json'), encoding='utf-8') as f:
      measured = json.load(f)
  except OSError:
    return []
  metrics = ', '.join(
      f'{k} {v:.3f}'
      for k, v in sorted(training['final_batch_metrics'].items()))
  return [
      f"Pretraining (shared by every run): {training['steps']} steps in "
      f"{training['seconds']} s, peak {measured['peak_tree_rss_mb'] / 1024:.1f}"
      f' GiB; last batch on public data: {metrics}.'
  ]


def _repeats(text: str) -> list[tuple[str, str]]:
  pairs = []
  for item in filter(None, text.split(',')):
    row, _, epsilon = item.partition(':')
    if row not in ROWS or not epsilon:
      sys.exit(f'--repeats: {item!r} is not row:epsilon (rows: '
               f'{", ".join(ROWS)})')
    pairs.append((row, epsilon))
  return pairs


def write_readme(text: str) -> None:
  """Replaces the README's table between its `lm-table` markers."""
  readme = os.path.join(_ROOT, 'README.md')
  with open(readme, encoding='utf-8') as f:
    old = f.read()
  start = old.index(_START) + len(_START)
  with open(readme, 'w', encoding='utf-8') as f:
    f.write(old[:start] + text + '\n' + old[old.index(_END):])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out_dir', default='lm_table')
  parser.add_argument('--rows', default=','.join(ROWS))
  parser.add_argument('--epsilons',
                      default='4,2,8,none',
                      help='columns, in the order they run')
  parser.add_argument('--repeats',
                      default='all:4,lora4:4',
                      help='row:epsilon cells run again with --seed=1')
  parser.add_argument('--table_only', action='store_true')
  parser.add_argument('--write_readme',
                      action='store_true',
                      help="replace the README's table (lm-table markers)")
  options = parser.parse_args()
  rows = [r for r in options.rows.split(',') if r]
  epsilons = [e for e in options.epsilons.split(',') if e]
  for row in rows:
    if row not in ROWS:
      sys.exit(f'--rows: unknown row {row!r} (known: {", ".join(ROWS)})')
  out_dir = os.path.abspath(options.out_dir)
  if not options.table_only:
    pretrained = pretrain(out_dir)
    for epsilon in epsilons:
      for row in rows:
        run_cell(out_dir, pretrained, row, epsilon, 0)
    for row, epsilon in _repeats(options.repeats):
      run_cell(out_dir, pretrained, row, epsilon, 1)
  columns = [e for e in EPSILONS if e in epsilons]
  try:
    text = table(out_dir, rows, columns)
  except metrics_file.MetricsFileError as e:
    sys.exit(f'lm_table: error: {e}')
  print(text)
  if options.write_readme:
    write_readme(text)


if __name__ == '__main__':
  main()

"""W3 of `run_all`: the default transformer against its compute floor (issue 20).

W3 is tff-dp's default transformer (2 blocks of width 256; `workloads.
TRANSFORMER_SIZES`), 20 clients of 4 batches of 16 windows of 64 tokens
(the offline task's shape, synthetic ids), DP-FedAvg with the shared
hyperparameters. tff-dp runs it on the grouped path (`benchmarks.rounds`,
`--clients_per_call` resolved as the program resolves it), its rounds in turn
with the floor (`benchmarks.floor`: the same model, local SGD, clipping, noise
and server step in one tf.function); the `--trainable=lora` row runs tff-dp
alone (the floor trains every parameter). The issue's target is within 1.3x
of the floor, with memory per round flat: the TFF worker's and the driver's
resident set sizes are recorded after every round.

Full mode only: tracing the process takes tens of seconds and a round
seconds, which quick mode has no room for.
"""

from typing import Any, Optional

from benchmarks import stats
from benchmarks import workloads as workloads_lib

JOB = 'language-model'


def plan_job(quick: bool, module: str) -> Optional[dict[str, Any]]:
  """The W3 job for `run_all.plan` (the tff-dp engine), or None (quick)."""
  rows = [{
      'workload': w.to_json(),
      'mechanism': 'gaussian_fixed',
      'paired_floor': ['loop'] if w.trainable == 'all' else [],
  } for w in workloads_lib.transformer_workloads(quick)]
  if not rows:
    return None
  return {'name': JOB, 'module': module, 'spec': {'rows': rows}}


def _memory(entry: dict[str, Any]) -> dict[str, Any]:
  """Resident set sizes after the first and the last timed round, MB."""
  timed = [r for r in entry['rounds'] if r['timed']]
  if not timed or 'worker_rss_mb' not in timed[0]['parts']:
    return {}
  return {
      f'{who}_rss_mb': [timed[0]['parts'][key], timed[-1]['parts'][key]]
      for who, key in (('worker', 'worker_rss_mb'), ('python', 'python_rss_mb'))
  }


def rows(jobs: dict[str, dict[str, Any]], quick: bool, row_fn,
         paired_floor_entry) -> list[dict[str, Any]]:
  """Per W3 workload: tff-dp, the floor in turn with it, their ratio and
  memory (`row_fn` and `paired_floor_entry` are `run_all`'s)."""
  result = jobs.get(JOB, {}).get('result')
  found = []
  for workload in workloads_lib.transformer_workloads(quick):
    entry = None
    for candidate in (result or {}).get('workloads', []):
      if candidate['workload']['name'] == workload.name:
        entry = candidate
    tff_dp = row_fn('tff-dp', entry)
    floor = row_fn('floor', paired_floor_entry(entry))
    found.append({
        'workload': workload.name,
        'trainable': workload.trainable,
        'tff-dp': tff_dp,
        'floor': floor,
        'memory': _memory(entry) if entry else {},
        'ratios': {
            'tff_dp_over_floor':
                stats.ratio(tff_dp.get('median_s'), floor.get('median_s'))
        },
    })
  return found


def _ratio_text(value: Optional[float]) -> str:
  # Two decimals: the target is 1.3x.
  return 'n/a' if value is None else f'{value:.2f}x'


def format_rows(found: list[dict[str, Any]], cell) -> list[str]:
  """The report's W3 lines (`cell`: `run_all`'s)."""
  if not found:
    return []
  lines = [
      '', 'W3: default transformer, 20 clients x 4 batches of 16 windows of '
      '64 tokens (seconds per round, median [p10, p90]; floor in turn)',
      f"{'workload':<14} {'floor':<22} {'tff-dp':<22} {'tff-dp/floor':>12}  "
      'RSS MB worker / python (first -> last timed round)'
  ]
  for row in found:
    memory = row['memory']
    rss = ' / '.join(f'{values[0]:.0f} -> {values[1]:.0f}'
                     for values in (memory.get('worker_rss_mb'),
                                    memory.get('python_rss_mb'))
                     if values)
    lines.append(
        f"{row['workload']:<14} {cell(row['floor']):<22} "
        f"{cell(row['tff-dp']):<22} "
        f"{_ratio_text(row['ratios']['tff_dp_over_floor']):>12}  {rss}")
  return lines

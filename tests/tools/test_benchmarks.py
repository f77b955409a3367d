"""The benchmark harness (benchmarks/, issue 7): quick mode end to end.

The e2e test runs `python -m benchmarks.run_all --quick` in a subprocess and
checks the JSON it writes: structure, positive finite numbers, and that no TFF
worker started by the benchmark is left running. It checks no timing target:
those live in the benchmark's output, never in tests. The other tests are pure
Python checks of the statistics and of the run plan.
"""

import glob
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import workers

# `python -m pytest` from the root puts it on sys.path; bare `pytest` does not.
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import harness
from benchmarks import run_all
from benchmarks import stats
from benchmarks import workloads

# pylint: enable=g-import-not-at-top,wrong-import-position

_QUICK_TIMEOUT_SECONDS = 300
_ENGINES = ('floor', 'tff-dp', 'plain-tff')


def _positive_finite(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool) and
          math.isfinite(value) and value > 0)


def test_percentile_matches_numpy():
  values = [0.3, 0.1, 0.7, 0.2, 0.9, 0.4, 0.5]
  for q in (0, 10, 50, 90, 100):
    assert stats.percentile(values,
                            q) == pytest.approx(np.percentile(values, q))


def test_percentile_rejects_empty_and_bad_q():
  with pytest.raises(ValueError):
    stats.percentile([], 50)
  with pytest.raises(ValueError):
    stats.percentile([1.0], 101)


def test_second_half_slope_ignores_warm_up():
  rounds = list(range(1, 11))
  # Fast growth during warm-up, then exactly 0.5 MiB per round.
  rss = [100.0 * r for r in range(1, 6)
        ] + [1000.0 + 0.5 * r for r in range(6, 11)]
  assert stats.second_half_slope(rounds, rss) == pytest.approx(0.5)
  assert stats.least_squares_slope([1.0], [2.0]) is None
  assert stats.ratio(1.0, 0.0) is None


def test_round_permutations_match_tff_dp_client_data():
  workload = workloads.timing_workloads(quick=True)[0]
  orders = workloads.round_permutations(workload, round_num=3, seed=0)
  rng = np.random.default_rng([0, 3, 1])
  np.testing.assert_array_equal(orders[1],
                                rng.permutation(workload.examples_per_client))


def _timing_workload(*, warmup: int, timed: int) -> workloads.Workload:
  """A tiny workload for the harness's bookkeeping (no round runs it)."""
  return workloads.Workload(family='W1',
                            model=workloads.ModelName.MLP,
                            clients=2,
                            examples_per_client=4,
                            batch_size=2,
                            epochs=1,
                            warmup_rounds=warmup,
                            timed_rounds=timed)


def test_time_interleaved_runs_each_round_of_every_runner_in_turn():
  workload = _timing_workload(warmup=1, timed=3)
  calls = []

  def runner(name):

    def run_round(r):
      calls.append((r, name))
      return {'part_s': 0.0}

    return run_round, None

  results = harness.time_interleaved(
      workload, {name: runner(name) for name in ('a', 'b', 'c')})
  # Round r of every runner before round r + 1 of any; the order rotates.
  assert calls == [(0, 'a'), (0, 'b'), (0, 'c'), (1, 'b'), (1, 'c'), (1, 'a'),
                   (2, 'c'), (2, 'a'), (2, 'b'), (3, 'a'), (3, 'b'), (3, 'c')]
  assert set(results) == {'a', 'b', 'c'}
  for result in results.values():
    assert result['seconds']['n'] == 3
    assert [rec['timed'] for rec in result['rounds']] == [False] + [True] * 3
    assert 'cpu_worker_s' not in result


def test_a_call_of_several_rounds_is_reported_per_round(monkeypatch):
  workload = _timing_workload(warmup=0, timed=2)
  # Each call takes 0.8 s of (fake) wall time for 4 rounds.
  clock = iter([0.0, 0.8, 1.0, 1.8])
  monkeypatch.setattr(harness.time, 'perf_counter', lambda: next(clock))
  results = harness.time_interleaved(
      workload, {'fused': (lambda r: {
          'next_s': 0.4,
          'rounds': 4
      }, None)})
  records = results['fused']['rounds']
  assert [rec['seconds'] for rec in records] == pytest.approx([0.2, 0.2])
  assert [rec['parts'] for rec in records] == [{'next_s': 0.1}] * 2
  assert [rec['rounds_per_call'] for rec in records] == [4, 4]


def test_plan_times_the_floor_in_turn_with_tff_dp():
  for quick in (True, False):
    jobs = {job['name']: job for job in run_all.plan(quick=quick)}
    floor_rows = jobs['floor']['spec']['rows']
    paired = [
        row for row in jobs['tff-dp']['spec']['rows'] if 'paired_floor' in row
    ]
    assert [(row['workload'], row['paired_floor']) for row in paired] == [
        (row['workload'], row['implementations']) for row in floor_rows
    ]


def test_plan_runs_every_engine_once_and_the_memory_run():
  names = [job['name'] for job in run_all.plan(quick=True)]
  assert names == [
      'floor', 'tff-dp', 'plain-tff', 'mechanisms', 'memory-tff-dp'
  ]
  full = [job['name'] for job in run_all.plan(quick=False)]
  assert full[:3] == list(_ENGINES)
  assert 'memory-plain-tff' in full
  _, rounds = workloads.memory_workload(quick=False)
  assert rounds >= 300


def test_plan_has_a_row_per_mechanism_with_its_floor():
  for quick in (True, False):
    jobs = {job['name']: job for job in run_all.plan(quick=quick)}
    rows = jobs['mechanisms']['spec']['rows']
    grouped = [row for row in rows if 'paired_floor' in row]
    names = [w.name for w in workloads.mechanism_workloads(quick)]
    # W1, and in full mode W2 too: every mechanism on each (but those
    # NOT_RUN says why not).
    assert names == (['W1-c10'] if quick else ['W1-c50', 'W2-c20'])
    assert [(row['workload']['name'], row['variant']['name']) for row in grouped
           ] == [(name, m.name)
                 for name in names
                 for m in workloads.MECHANISMS
                 if (name[:2], m.name) not in run_all.NOT_RUN]
    report_rows = run_all.mechanism_rows({}, quick)
    assert len(report_rows) == len(names) * len(workloads.MECHANISMS)
    assert sum(bool(row['tff-dp'].get('not_run')) for row in report_rows) == (
        0 if quick else len(run_all.NOT_RUN))
    for row in grouped:
      cnn = row['workload']['model'] == 'cnn'
      assert ('vectorized'
              in row['paired_floor']) == (not cnn and
                                          row['variant']['example_dp']
                                          is None), row
    # Full mode also times TFF's one client per call for each, on W1.
    per_call = [row for row in rows if row.get('clients_per_call') == 1]
    assert len(per_call) == (0 if quick else len(workloads.MECHANISMS))
    assert all(row['workload']['name'] == names[0] for row in per_call)
    for row in rows:
      assert workloads.Mechanism.from_json(
          row['variant']).to_json() == (row['variant'])


@pytest.fixture(scope='module')
def quick_run(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('bench')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([
      sys.executable, '-m', 'benchmarks.run_all', '--quick',
      f'--output_dir={output_dir}'
  ],
                          cwd=REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=_QUICK_TIMEOUT_SECONDS)
  latest = os.path.join(output_dir, 'latest.json')
  report = None
  if os.path.exists(latest):
    with open(latest) as f:
      report = json.load(f)
  return result, report, str(output_dir)


@pytest.mark.e2e
@pytest.mark.slow  # ~3.5 min; ./run.sh bench --quick runs the same.
def test_quick_mode_succeeds_and_prints_the_table(quick_run):
  result, report, output_dir = quick_run
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert report is not None
  assert 'Seconds per round' in result.stdout
  assert 'tff-dp/floor' in result.stdout
  stamped = [
      p for p in glob.glob(os.path.join(output_dir, '*.json'))
      if not p.endswith('latest.json')
  ]
  assert len(stamped) == 1
  with open(stamped[0]) as f:
    assert json.load(f) == report


@pytest.mark.e2e
@pytest.mark.slow  # ~3.5 min; ./run.sh bench --quick runs the same.
def test_quick_mode_json_has_every_engine_with_positive_finite_times(quick_run):
  _, report, _ = quick_run
  assert report['schema_version'] == run_all.SCHEMA_VERSION
  assert report['mode'] == 'quick'
  assert report['machine']['shared'] is True
  names = [w.name for w in workloads.timing_workloads(quick=True)]
  assert [row['workload']['name'] for row in report['timing']] == names
  for row in report['timing']:
    assert _positive_finite(row['parameters'])
    for engine in _ENGINES:
      entry = row['engines'][engine]
      assert entry['ok'], (row['workload']['name'], engine)
      for key in ('median_s', 'p10_s', 'p90_s', 'first_round_s'):
        assert _positive_finite(entry[key]), (engine, key, entry[key])
      assert entry['p10_s'] <= entry['median_s'] <= entry['p90_s']
      assert entry['timed_rounds'] == row['workload']['timed_rounds']
    for name, value in row['ratios'].items():
      assert _positive_finite(value), (name, value)
    # The floor timed in turn with tff-dp (the table's) and alone.
    assert row['engines']['floor-alone']['ok']
    assert row['ratios']['tff_dp_over_floor'] == pytest.approx(
        row['engines']['tff-dp']['median_s'] /
        row['engines']['floor']['median_s'])
  # A row per mechanism, on the grouped path, with its floor.
  assert [row['mechanism'] for row in report['mechanism_rows']
         ] == [m.name for m in workloads.MECHANISMS]
  for row in report['mechanism_rows']:
    assert row['tff-dp']['ok'] and row['floor']['ok'], row['mechanism']
    assert row['tff-dp']['clients_per_call'] > 1, row['mechanism']
    assert _positive_finite(row['ratios']['tff_dp_over_floor'])
  for entry in report['raw']['tff-dp']['workloads']:
    for result in entry['paired_floor']['implementations'].values():
      assert result['update_norms_finite']
  startup = {row['engine']: row for row in report['startup']}
  assert set(startup) == set(_ENGINES) | {'memory-tff-dp'}
  for row in startup.values():
    assert _positive_finite(row['time_to_first_round_s'])
    assert all(_positive_finite(v) for v in row['phases_s'].values())


@pytest.mark.e2e
@pytest.mark.slow  # ~3.5 min; ./run.sh bench --quick runs the same.
def test_quick_mode_memory_run_samples_process_and_worker(quick_run):
  _, report, _ = quick_run
  memory = report['memory']['tff-dp']
  _, rounds = workloads.memory_workload(quick=True)
  assert memory['rounds'] == rounds
  assert len(memory['samples']) == rounds
  for who in ('process', 'worker'):
    assert _positive_finite(memory[who]['peak_hwm_mb']), who
    assert _positive_finite(memory[who]['peak_sampled_mb']), who
    assert math.isfinite(memory[who]['slope_mb_per_round']), who
  assert all(_positive_finite(s['worker_rss_mb']) for s in memory['samples'])


@pytest.mark.e2e
@pytest.mark.slow  # ~3.5 min; ./run.sh bench --quick runs the same.
def test_quick_mode_leaves_no_tff_worker_running(quick_run):
  _, report, output_dir = quick_run
  # Workers started by tff_dp.execution.worker_launch, from the lines it writes to
  # its logs.
  logged = []
  for path in glob.glob(os.path.join(output_dir, '**', '*.log'),
                        recursive=True):
    logged += workers.worker_pids_from_log(path)
  assert len(logged) >= 2  # The tff-dp engine and the memory run.
  # Every worker the engines reported, TFF's default-context one included.
  reported = [
      worker['pid'] for job in report['jobs'] for worker in job['workers']
  ]
  assert set(logged) <= set(reported)
  assert len(reported) >= 3
  assert not any(worker['left_running']
                 for job in report['jobs']
                 for worker in job['workers'])
  assert workers.wait_until_gone(set(logged) | set(reported)) == []


@pytest.mark.tff
@pytest.mark.parametrize('implementation', ['loop', 'vectorized'])
def test_floor_round_equals_a_tff_dp_round_without_noise(
    tff_runtime, implementation):
  """The floor does the same work as tff-dp: same weights after one round."""
  del tff_runtime  # Runs TFF on the session's worker.
  # pylint: disable=g-import-not-at-top
  import dataclasses

  from benchmarks import floor
  from benchmarks import rounds
  from tff_dp.config import DpMechanism
  # pylint: enable=g-import-not-at-top
  hyper = dataclasses.replace(workloads.HYPERPARAMETERS,
                              noise_multiplier=0.0,
                              clip=0.05)  # A clip that binds.
  workload = workloads.Workload(family='W1',
                                model=workloads.ModelName.MLP,
                                clients=3,
                                examples_per_client=40,
                                batch_size=16,
                                epochs=2,
                                warmup_rounds=0,
                                timed_rounds=1)
  # What the tff-dp engine runs (the grouped path for the MLP).
  prepared = rounds.prepare(workload, DpMechanism.GAUSSIAN_FIXED, hyper)
  assert prepared.clients_per_call > 1
  try:
    process = prepared.process
    state = process.initialize()
    initial = process.get_model_weights(state).trainable
    for r in range(2):  # Two rounds: server momentum matters in the second.
      state = process.next(state,
                           prepared.round_inputs(r,
                                                 range(workload.clients))).state
    expected = process.get_model_weights(state).trainable
  finally:
    prepared.close()

  floor_round = floor.FloorRound(workload,
                                 hyper,
                                 implementation,
                                 initial=initial)
  data = workloads.synthetic_data(workload)
  for r in range(2):
    floor_round(*floor.round_inputs(data, workload, r), r)
  for got, want, start in zip(floor_round.weights, expected, initial):
    assert not np.allclose(want, start)  # The rounds changed the model.
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-6)


def test_xla_floor_refuses_an_unknown_variant_in_one_line(capsys):
  from benchmarks import xla_floor  # pylint: disable=g-import-not-at-top
  assert xla_floor.main(['xla_floor', '--variants=loop,loop_xla_bogus']) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and "'loop_xla_bogus'" in err


def test_worker_threads_settings_become_the_workers_environment():
  from benchmarks import worker_threads  # pylint: disable=g-import-not-at-top
  assert worker_threads.thread_environment('default') == {}
  assert worker_threads.thread_environment('1,2') == {
      'TF_NUM_INTRAOP_THREADS': '1',
      'TF_NUM_INTEROP_THREADS': '2'
  }
  for bad in ('2', '0,1', 'a,b', '1,2,3'):
    with pytest.raises(ValueError, match=repr(bad)):
      worker_threads.thread_environment(bad)


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['loop_xla_round', 'loop_xla_client'])
def test_xla_floor_round_computes_the_plain_floor_round(variant):
  """The XLA floor does the same work as the plain one (zero noise, a clip
  that binds), so that their times compare the same round."""
  # pylint: disable=g-import-not-at-top
  import dataclasses

  from benchmarks import floor
  from benchmarks import xla_floor
  # pylint: enable=g-import-not-at-top
  hyper = dataclasses.replace(workloads.HYPERPARAMETERS,
                              noise_multiplier=0.0,
                              clip=0.05)
  workload = workloads.Workload(family='W1',
                                model=workloads.ModelName.MLP,
                                clients=3,
                                examples_per_client=40,
                                batch_size=16,
                                epochs=2,
                                warmup_rounds=0,
                                timed_rounds=1)
  implementation, _, scope = variant.partition('_xla_')
  plain = floor.FloorRound(workload, hyper, implementation)
  compiled = xla_floor.XlaFloorRound(workload, hyper, implementation, scope)
  start = [w.numpy() for w in plain.weights]
  data = workloads.synthetic_data(workload)
  for r in range(2):
    inputs = floor.round_inputs(data, workload, r)
    plain(*inputs, r)
    compiled(*inputs, r)
  for got, want, initial in zip(compiled.weights, plain.weights, start):
    assert not np.allclose(want.numpy(), initial)
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-6)


def test_outside_round_benchmark_replays_the_loop_steps(tmp_path):
  # pylint: disable=g-import-not-at-top
  from benchmarks import outside_round
  from tff_dp.privacy import accounting
  # pylint: enable=g-import-not-at-top
  args = outside_round.parse_args(
      ['x', '--rounds=6,3', '--window=2', f'--json={tmp_path / "r.json"}'])
  assert args.rounds == [3, 6]
  result = outside_round.run(args)
  assert [row['round'] for row in result['rows']] == [3, 6]
  for row in result['rows']:
    assert set(row['seconds']) == set(outside_round.PRIVACY_STEPS) | {'total'}
    assert all(_positive_finite(v) for v in row['seconds'].values())
  # The epsilons it prints are those of the main job's ledger after 6 rounds.
  tracker = outside_round.main_job_tracker()
  for round_num in range(1, 7):
    tracker.charge(round_num, [])
  accounting.EPSILONS.clear()
  assert result['rows'][-1]['epsilons'] == {
      kind.value: eps for kind, eps in tracker.epsilons().items()
  }
  assert 'ratio total r=6 / r=3' in outside_round.format_result(result)
  with pytest.raises(SystemExit):
    outside_round.parse_args(['x', '--rounds=2', '--window=2'])

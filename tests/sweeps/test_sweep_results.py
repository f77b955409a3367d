"""What a sweep reads from finished runs, its tables and its plots.

Run directories are written by `tests.helpers.fake_runs` with known numbers
(no training), so every statistic and cell can be checked exactly.
"""

import csv
import os
import statistics

import pytest

from tests.helpers import fake_runs
from tff_dp.sweeps import outputs
from tff_dp.sweeps import plots
from tff_dp.sweeps import report
from tff_dp.sweeps import results

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


@pytest.fixture
def groups(tmp_path):
  out = str(tmp_path)
  runs = [
      results.read_run(fake_runs.write_run(out,
                                           'eps4_seed0',
                                           accuracies=[0.5, 0.7],
                                           noise=2.0,
                                           target_epsilon=4.0),
                       setting='eps4'),
      results.read_run(fake_runs.write_run(out,
                                           'eps4_seed1',
                                           accuracies=[0.5, 0.8],
                                           noise=2.0,
                                           seed=1,
                                           target_epsilon=4.0),
                       setting='eps4'),
      results.read_run(fake_runs.write_run(out,
                                           'eps8_seed0',
                                           accuracies=[0.6, 0.9],
                                           noise=1.0,
                                           target_epsilon=8.0),
                       setting='eps8'),
      results.read_run(fake_runs.write_run(out,
                                           'nonprivate_seed0',
                                           accuracies=[0.7, 0.95],
                                           private=False,
                                           wall_seconds=12.0),
                       setting='nonprivate'),
  ]
  return results.group(runs, by_label=True)


def test_runs_are_grouped_by_setting_with_mean_sd_and_range(groups):
  assert [g.label for g in groups] == ['eps4', 'eps8', 'nonprivate']
  eps4 = groups[0].accuracy()
  assert eps4.mean == pytest.approx(0.75) and eps4.n == 2
  assert eps4.sd == pytest.approx(statistics.stdev([0.7, 0.8]))
  assert (eps4.low, eps4.high) == (0.7, 0.8)
  assert groups[1].accuracy().sd is None  # One run: no spread.
  assert groups[0].epsilon('pld') == round(2**0.5 / 2, 6)
  assert groups[0].target_epsilon == 4.0 and not groups[2].private
  rounds, points = groups[0].series('eval/accuracy')
  assert rounds == [1, 2] and [p.mean for p in points] == pytest.approx(
      [0.5, 0.75])


def test_equal_configurations_are_one_setting_whatever_their_seed(tmp_path):
  out = str(tmp_path)
  runs = [
      results.read_run(
          fake_runs.write_run(out, f'fixed-seed{s}', accuracies=[0.5], seed=s))
      for s in (0, 1)
  ]
  runs.append(
      results.read_run(
          fake_runs.write_run(out, 'noisier', accuracies=[0.4], noise=3.0)))
  grouped = results.group(runs, by_label=False)
  assert [(g.label, len(g.runs)) for g in grouped] == [('fixed', 2),
                                                       ('noisier', 1)]


def test_the_table_holds_released_values_only(groups, tmp_path):
  table = report.write_table(str(tmp_path), groups)
  lines = table.splitlines()
  assert lines[0] == (
      '| setting | runs | target epsilon | epsilon (RDP) | epsilon (PLD) | '
      'delta | test accuracy (mean ± sd (range)) | rounds |')
  assert lines[2] == ('| eps4 | 2 | 4 | 0.7778 | 0.7071 | 1e-05 | '
                      '0.7500 ± 0.0707 (0.700-0.800) | 2 |')
  assert lines[4] == ('| nonprivate | 1 | n/a | none (not private) | '
                      'none (not private) | n/a | 0.9500 | 2 |')
  assert 'wall' not in table and '12' not in table
  with open(tmp_path / report.TABLE_CSV) as f:
    rows = list(csv.DictReader(f))
  assert rows[0]['accuracy_mean'] == repr(0.75)
  assert rows[0]['epsilon_pld'] == repr(round(2**0.5 / 2, 6))
  assert rows[2]['epsilon_pld'] == '' and rows[2]['private'] == 'False'
  assert 'wall_seconds' not in rows[0]


def test_wall_times_only_under_nonprivate_with_their_label(groups, tmp_path):
  written = outputs.write_outputs(str(tmp_path),
                                  groups,
                                  wall_seconds={
                                      'eps4_seed0': 30.0,
                                      'eps4_seed1': 40.0
                                  },
                                  wall_source='measured',
                                  title='t')
  assert '| eps4 | 2 | 35 s | 30-40 s |' in written.wall_times
  with open(tmp_path / 'nonprivate' / report.WALL_TIMES_MD) as f:
    assert f.read().startswith('NOT covered by the privacy guarantee')
  with open(tmp_path / 'nonprivate' / report.WALL_TIMES_CSV) as f:
    rows = list(csv.DictReader(f))
  assert {r['covered_by_privacy_guarantee'] for r in rows} == {'no'}
  assert [r['wall_seconds'] for r in rows[:3]] == ['30.0', '40.0', '']
  top_level = set(
      os.listdir(tmp_path)) - {run.name for g in groups for run in g.runs}
  assert top_level == {
      'results.md', 'results.csv', 'nonprivate', plots.ACCURACY_VS_EPSILON,
      plots.EPSILON_VS_ROUNDS, plots.ACCURACY_VS_ROUNDS
  }


def test_the_plots_are_png_files_of_some_substance(groups, tmp_path):
  paths = plots.write_plots(str(tmp_path), groups, title='synthetic')
  assert [os.path.basename(p) for p in paths] == [
      plots.ACCURACY_VS_EPSILON, plots.EPSILON_VS_ROUNDS,
      plots.ACCURACY_VS_ROUNDS
  ]
  for path in paths:
    with open(path, 'rb') as f:
      data = f.read()
    assert data.startswith(_PNG_SIGNATURE) and len(data) > 10_000, path


def test_a_directory_that_is_not_a_finished_run_is_named(tmp_path):
  with pytest.raises(results.NotARunError, match='no such directory'):
    results.read_run(str(tmp_path / 'missing'))
  (tmp_path / 'other').mkdir()
  with pytest.raises(results.NotARunError, match='not a tff-dp run'):
    results.read_run(str(tmp_path / 'other'))
  unfinished = tmp_path / 'unfinished'
  unfinished.mkdir()
  (unfinished / fake_runs.RUN_MARKER).write_text('run_id=x\n')
  with pytest.raises(results.NotARunError, match='has not finished'):
    results.read_run(str(unfinished))


def test_a_cut_last_line_of_metrics_csv_is_not_a_round(tmp_path):
  """A run interrupted mid-append leaves half a row without its line end
  (`tff_dp.program.metrics_file`): the history holds the whole rows only."""
  run_dir = fake_runs.write_run(str(tmp_path),
                                'cut',
                                accuracies=[0.5, 0.7],
                                noise=2.0)
  with open(os.path.join(run_dir, 'metrics.csv'), 'a', newline='') as f:
    f.write('3,0.8')  # Round 3's row, cut after its accuracy.
  run = results.read_run(run_dir)
  assert [row['round'] for row in run.history] == [1.0, 2.0]
  assert [row['eval/accuracy'] for row in run.history] == [0.5, 0.7]

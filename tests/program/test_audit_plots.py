"""The audit's PNG plots (`tff_dp.program.audit_plots`), from synthetic results.

The results are built here as `canary_statistics.AuditResult` holds them (the
canaries' statistics, the estimates and bound of `tff_dp.audit`, a history
by round), in numpy: no TensorFlow, no audit run. Rendering a pair of plots
takes about half a second, so the files are rendered once per case and the
figures' contents (titles, scales) are read from the `Figure` objects.
"""

import dataclasses
import math
import os
import types

import numpy as np
from PIL import Image
import pytest

from tests.helpers import fresh_imports
from tff_dp.audit import lower_bound
from tff_dp.audit import one_shot
from tff_dp.program import audit_plots
from tff_dp.program import canary_statistics

_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
_DELTA = 1e-5
_ROUNDS = 10
# Width x height in pixels: the figures' inches times their 100 dpi.
_SIZES = {
    audit_plots.CANARIES_FILE: (1300, 500),
    audit_plots.EPSILON_FILE: (900, 550),
}


def _statistics(rng, *, dim: int, canaries: int, signal: float):
  """Cosines of canaries with T noisy rounds; an inserted one is in one."""
  inserted = rng.random(canaries) < 0.5
  per_round = rng.standard_normal((canaries, _ROUNDS)) / math.sqrt(dim)
  per_round[inserted, rng.integers(0, _ROUNDS, inserted.sum())] += signal
  final = per_round.sum(axis=1) / math.sqrt(_ROUNDS)
  return one_shot.CanaryStatistics(final_model=final,
                                   all_iterates=per_round.max(axis=1)), inserted


def _history(estimates, bound, *, analytic: float):
  """Values growing to the final ones; early estimates undefined (NaN)."""
  rows = []
  for round_num in range(1, _ROUNDS + 1):
    grown = round_num / _ROUNDS
    rows.append((
        round_num,
        {
            'audit/epsilon_estimate_all_iterates':
                (estimates[0].epsilon * grown if round_num > 2 else math.nan),
            'audit/epsilon_estimate_final': estimates[1].epsilon * grown,
            'audit/epsilon_lower_bound': bound.epsilon * grown,
            'privacy/epsilon_rdp': analytic * math.sqrt(grown),
            'privacy/epsilon_pld':
                math.nan,  # An accountant that cannot compose.
        }))
  return tuple(rows)


def _result(*, dim=2000, canaries=200, signal=0.1, analytic=60.0, seed=0):
  """An `AuditResult`-like object with only the fields the plots read."""
  rng = np.random.default_rng(seed)
  statistics, inserted = _statistics(rng,
                                     dim=dim,
                                     canaries=canaries,
                                     signal=signal)
  estimates = (one_shot.estimate_epsilon(
      statistics.all_iterates[inserted],
      dim=dim,
      delta=_DELTA,
      unseen_statistics=statistics.all_iterates[~inserted]),
               one_shot.estimate_epsilon(statistics.final_model[inserted],
                                         dim=dim,
                                         delta=_DELTA))
  bound = lower_bound.one_run_lower_bound(statistics.all_iterates,
                                          inserted,
                                          delta=_DELTA,
                                          beta=0.05)
  return types.SimpleNamespace(statistics=statistics,
                               inserted_mask=inserted,
                               estimate_all_iterates=estimates[0],
                               estimate_final=estimates[1],
                               bound=bound,
                               dim=dim,
                               history=_history(estimates,
                                                bound,
                                                analytic=analytic))


def _check_png(path: str, name: str) -> None:
  with open(path, 'rb') as f:
    data = f.read()
  assert data.startswith(_PNG_SIGNATURE), path
  # Histograms, curves, text: more than a blank canvas (4 kB) or two bare
  # axes (17 kB), far less than a photograph.
  assert 20_000 < len(data) < 1_000_000, (path, len(data))
  with Image.open(path) as image:
    assert image.format == 'PNG'
    assert image.size == _SIZES[name]
    # Drawn on: many colours (anti-aliased text and curves), not one.
    assert len(image.convert('RGB').getcolors(maxcolors=1 << 20)) > 50


@pytest.fixture(name='written', scope='module')
def fixture_written(tmp_path_factory):
  run_dir = tmp_path_factory.mktemp('run')
  paths = audit_plots.write_audit_plots(_result(),
                                        str(run_dir),
                                        title='gaussian_fixed, 10 rounds')
  return run_dir, paths


def test_writes_both_pngs_into_the_run_directory(written):
  run_dir, paths = written
  assert paths == [
      os.path.join(run_dir, audit_plots.CANARIES_FILE),
      os.path.join(run_dir, audit_plots.EPSILON_FILE)
  ]
  for path in paths:
    _check_png(path, os.path.basename(path))
  # Atomic writes leave no temporary file behind.
  assert sorted(os.listdir(run_dir)) == sorted(_SIZES)


def test_undefined_values_do_not_stop_the_plots(tmp_path):
  # What an audit reports before any canary was sampled: NaN estimates
  # (constant statistics: no fit), NaN and infinite values by round, and
  # statistics of rounds never run (-inf).
  result = _result()
  undefined = one_shot.OneShotEstimate(epsilon=math.nan,
                                       delta=_DELTA,
                                       mean=math.nan,
                                       std=math.nan,
                                       null='none (constant statistic)',
                                       null_mean=math.nan,
                                       null_std=math.nan,
                                       canaries=0)
  result.estimate_all_iterates = result.estimate_final = undefined
  result.statistics = one_shot.CanaryStatistics(
      final_model=np.zeros(result.inserted_mask.size),
      all_iterates=np.full(result.inserted_mask.size, -math.inf))
  result.history = ((1, {
      'audit/epsilon_estimate_all_iterates': math.nan,
      'audit/epsilon_lower_bound': 0.0,
      'privacy/epsilon_rdp': math.inf
  }), (2, {
      'audit/epsilon_estimate_all_iterates': math.inf,
      'privacy/epsilon_rdp': math.nan
  }))
  for path in audit_plots.write_audit_plots(result,
                                            str(tmp_path),
                                            title='nothing yet'):
    _check_png(path, os.path.basename(path))


def test_an_empty_history_is_plotted_empty(tmp_path):
  result = _result()
  result.history = ()
  figure = audit_plots._epsilon_figure(result, 'no rounds')
  assert not figure.axes[0].get_lines()


def test_the_panels_name_the_statistic_and_the_estimate():
  result = _result()
  axes = audit_plots._canaries_figure(result, 'title').axes
  all_iterates, final = (ax.get_title() for ax in axes)
  assert 'max over rounds of cos(canary, round update)' in all_iterates
  assert f'{result.estimate_all_iterates.epsilon:.3g}' in all_iterates
  assert 'cos(canary, sum of round updates)' in final
  legend = [t.get_text() for t in axes[0].get_legend().get_texts()]
  assert sum(n in ' '.join(legend)
             for n in ('inserted canaries (', 'not inserted canaries (',
                       'fit to inserted', 'null: fit to not inserted')) == 4


@pytest.mark.parametrize('dim,null', [(500, 'null: exact cosine law, d=500'),
                                      (2000, 'null: N(0, 1/d), d=2000')])
def test_the_final_model_null_is_the_estimates(dim, null):
  axes = audit_plots._canaries_figure(_result(dim=dim), 'title').axes
  legend = [t.get_text() for t in axes[1].get_legend().get_texts()]
  assert null in legend


def test_estimates_without_fitted_fields_are_fitted_from_the_statistics():
  # Duck typing: an estimate that only has an epsilon (and no estimate at
  # all) still gets both curves, fitted as one_shot does.
  result = _result(dim=500)
  result.estimate_all_iterates = types.SimpleNamespace(epsilon=1.5)
  del result.estimate_final
  axes = audit_plots._canaries_figure(result, 'title').axes
  assert 'ε = 1.5' in axes[0].get_title()
  assert len(axes[0].get_lines()) == len(axes[1].get_lines()) == 2


@pytest.mark.parametrize('values,scale', [((0.5, 2.0, 40.0), 'log'),
                                          ((2.0, 3.0, 5.0), 'linear')])
def test_the_epsilon_axis_is_logarithmic_when_the_values_span_decades(
    values, scale):
  result = _result()
  result.history = tuple((round_num, {
      'audit/epsilon_estimate_all_iterates': values[0],
      'audit/epsilon_lower_bound': values[1],
      'privacy/epsilon_rdp': values[2]
  }) for round_num in (1, 2))
  assert audit_plots._epsilon_figure(result,
                                     'title').axes[0].get_yscale() == scale


def test_every_series_is_drawn_without_its_undefined_points():
  ax = audit_plots._epsilon_figure(_result(), 'title').axes[0]
  lines = {line.get_label().split(':')[0]: line for line in ax.get_lines()}
  assert set(lines) == {
      'one-shot estimate, all iterates', 'one-shot estimate, final model',
      'lower bound (confidence 0.95)', 'analytic ε (pld)', 'analytic ε (rdp)'
  }
  assert list(lines['one-shot estimate, all iterates'].get_xdata()) == list(
      range(3, _ROUNDS + 1))
  assert not len(lines['analytic ε (pld)'].get_xdata())
  assert lines['analytic ε (pld)'].get_label().endswith(': n/a')


def test_mismatched_mask_is_refused(tmp_path):
  result = _result()
  result.inserted_mask = result.inserted_mask[1:]
  with pytest.raises(ValueError, match='inserted_mask'):
    audit_plots.write_audit_plots(result, str(tmp_path), title='t')
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('where', ['a file', 'missing'])
def test_an_unwritable_directory_is_an_oserror_naming_the_file(tmp_path, where):
  # A regular file or a missing directory: unwritable even for root.
  run_dir = tmp_path / 'run'
  if where == 'a file':
    run_dir.write_text('not a directory')
  target = os.path.join(run_dir, audit_plots.CANARIES_FILE)
  with pytest.raises(OSError) as raised:
    audit_plots.write_audit_plots(_result(), str(run_dir), title='t')
  assert raised.value.filename == target
  assert target in str(raised.value)
  assert sorted(os.listdir(tmp_path)) == (['run'] if where == 'a file' else [])


def test_the_fields_read_are_those_of_the_audit_result():
  # The synthetic results above stand for `canary_statistics.AuditResult`.
  fields = {f.name for f in dataclasses.fields(canary_statistics.AuditResult)}
  assert set(vars(_result())) <= fields
  for key in audit_plots._SERIES:
    assert key in canary_statistics.KEYS
  assert audit_plots._ANALYTIC_PREFIX == 'privacy/epsilon_'


def test_import_does_not_pull_in_tensorflow():
  assert fresh_imports.heavy_imports('tff_dp.program.audit_plots') == []

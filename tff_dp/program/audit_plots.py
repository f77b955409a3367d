"""PNG plots of an empirical privacy audit (`mechanism_audit.AuditResult`).

Two files in the audit's run directory:

* `audit_canaries.png`: for each threat model (all iterates: a canary's
  largest cosine with one round's released update; final model: its cosine
  with the sum of the updates), histograms of the statistic of the inserted
  and of the never inserted canaries, overlaid, with the two distributions the
  one-shot estimate separates: the Gaussian fitted to the inserted canaries
  and the null (`tff_dp.audit.one_shot`: a Gaussian fitted to the unseen
  canaries, the exact cosine law, or N(0, 1/d)).
* `audit_epsilon.png`: the one-shot estimates (both threat models) and the
  lower bound next to each accountant's analytic epsilon, by round; values
  that are not finite are left out, and the y axis is logarithmic when the
  values span more than `_LOG_SCALE_RATIO`.

What is drawn is what the result holds: the canaries' statistics (cosines),
never their directions. Rendering uses matplotlib's `Figure` and its Agg
canvas directly, not pyplot: no global figure state, no display. Both images
are rendered before either file is written, and each file is replaced
atomically (`tff_dp.atomic_io`). Imports no TensorFlow.
"""

import errno
import io
import math
import os
from typing import Any, Optional

from matplotlib import figure as mpl_figure
from matplotlib import ticker
from matplotlib.backends import backend_agg
import numpy as np

from tff_dp import atomic_io
from tff_dp.audit import divergence
from tff_dp.audit import one_shot
from tff_dp.program import canary_statistics

CANARIES_FILE = 'audit_canaries.png'
EPSILON_FILE = 'audit_epsilon.png'
# Pixels per inch of the saved images.
_DPI = 100
# The y axis of the epsilon plot is logarithmic when its largest positive
# finite value is at least this many times its smallest.
_LOG_SCALE_RATIO = 30.0
_MAX_BINS = 60
_INSERTED_COLOR, _UNSEEN_COLOR = 'tab:red', 'tab:blue'
# (statistics attribute, estimate attribute, panel title).
_THREAT_MODELS = (
    ('all_iterates', 'estimate_all_iterates',
     'All iterates: max over rounds of cos(canary, round update)'),
    ('final_model', 'estimate_final',
     'Final model: cos(canary, sum of round updates)'),
)
# History key -> (legend label, marker); the analytic epsilons
# (`privacy/epsilon_<accountant>`) are dashed, with small dots (a history of
# one report is one point).
_SERIES = {
    canary_statistics.ESTIMATE_ALL_ITERATES:
        ('one-shot estimate, all iterates', 'o'),
    canary_statistics.ESTIMATE_FINAL: ('one-shot estimate, final model', 's'),
    canary_statistics.LOWER_BOUND: ('lower bound', '^'),
}
_ANALYTIC_PREFIX = 'privacy/epsilon_'


def write_audit_plots(result: Any, run_dir: str, *, title: str) -> list[str]:
  """Writes `audit_canaries.png` and `audit_epsilon.png` into `run_dir`.

  Args:
    result: A `mechanism_audit.AuditResult`, or any object with its fields
      `statistics` (`final_model`, `all_iterates`: one value per canary),
      `inserted_mask`, `estimate_all_iterates`, `estimate_final`, `bound`,
      `dim` and `history`.
    run_dir: An existing directory.
    title: The figures' title (e.g. the mechanism and the number of rounds).

  Returns:
    The paths written, canary histograms first.

  Raises:
    OSError: A file cannot be written; its message names the file.
    ValueError: The statistics and `inserted_mask` differ in length.
  """
  run_dir = os.fspath(run_dir)
  if not os.path.isdir(run_dir):
    # Before a second of rendering; the error is the one writing would give.
    code = errno.ENOTDIR if os.path.exists(run_dir) else errno.ENOENT
    raise OSError(code, os.strerror(code), os.path.join(run_dir, CANARIES_FILE))
  images = {
      CANARIES_FILE: _png(_canaries_figure(result, title)),
      EPSILON_FILE: _png(_epsilon_figure(result, title)),
  }
  paths = []
  for name, data in images.items():
    path = os.path.join(run_dir, name)
    try:
      atomic_io.write_bytes_atomic(path, data)
    except OSError as e:
      # Named by the plot, not by the temporary file that failed.
      raise OSError(e.errno, e.strerror, path) from e
    paths.append(path)
  return paths


def _png(fig: mpl_figure.Figure) -> bytes:
  buffer = io.BytesIO()
  backend_agg.FigureCanvasAgg(fig).print_png(buffer)
  return buffer.getvalue()


def _new_figure(width: float, height: float, title: str,
                panels: int) -> tuple[mpl_figure.Figure, list[Any]]:
  fig = mpl_figure.Figure(figsize=(width, height),
                          dpi=_DPI,
                          layout='constrained')
  fig.suptitle(title, fontsize=12)
  return fig, list(fig.subplots(1, panels, squeeze=False)[0])


def _canaries_figure(result, title: str) -> mpl_figure.Figure:
  """Histograms of both threat models' canary statistics, side by side."""
  mask = np.asarray(result.inserted_mask, dtype=bool).ravel()
  dim = int(result.dim)
  fig, axes = _new_figure(13, 5, title, len(_THREAT_MODELS))
  for ax, (name, estimate_name, panel_title) in zip(axes, _THREAT_MODELS):
    values = np.asarray(getattr(result.statistics, name),
                        dtype=np.float64).ravel()
    if values.shape != mask.shape:
      raise ValueError(f'statistics.{name} has {values.size} values but '
                       f'inserted_mask has {mask.size}.')
    inserted = values[mask & np.isfinite(values)]
    unseen = values[~mask & np.isfinite(values)]
    estimate = getattr(result, estimate_name, None)
    _canary_panel(ax,
                  inserted=inserted,
                  unseen=unseen,
                  curves=_distributions(estimate, name, inserted, unseen, dim))
    ax.set_title(f'{panel_title}\n{_estimate_text(estimate)}', fontsize=10)
  return fig


def _canary_panel(ax, *, inserted: np.ndarray, unseen: np.ndarray,
                  curves) -> None:
  """One threat model: both histograms, the fitted Gaussian and the null."""
  both = np.concatenate([inserted, unseen])
  if both.size == 0:
    ax.text(0.5,
            0.5,
            'no finite statistic',
            ha='center',
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return
  edges = _bin_edges(both)
  for values, color, label in ((unseen, _UNSEEN_COLOR, 'not inserted'),
                               (inserted, _INSERTED_COLOR, 'inserted')):
    if values.size:
      # Shared bins unless they would hide a group in a few of them (the
      # groups far apart, as with little noise): then each its own.
      bins = edges if _bins_within(edges, values) >= 5 else _bin_edges(values)
      ax.hist(values,
              bins=bins,
              density=True,
              histtype='stepfilled',
              alpha=0.45,
              color=color,
              label=f'{label} canaries ({values.size})')
  x = _curve_grid(edges, [dist for dist, _ in curves])
  for (dist, label), color, style in zip(curves,
                                         (_INSERTED_COLOR, _UNSEEN_COLOR),
                                         ('-', '--')):
    if dist is not None:
      ax.plot(x,
              np.exp(dist.logpdf(x)),
              color=color,
              linestyle=style,
              label=label)
  ax.set_xlabel('cosine')
  ax.set_ylabel('density')
  # Long labels (-0.00075) would run into each other at numpy's default.
  ax.xaxis.set_major_locator(ticker.MaxNLocator(nbins=6))
  ax.legend(fontsize=8)


def _bin_edges(values: np.ndarray) -> np.ndarray:
  """Shared bins for both groups: numpy's 'auto' rule, 10 to _MAX_BINS."""
  low, high = float(values.min()), float(values.max())
  if high - low <= 1e-12 * max(1.0, abs(low)):
    # A constant statistic: one bin centred on it, in a window around it.
    half = max(1e-3, abs(low) * 1e-3)
    return np.linspace(low - half, high + half, 12)
  bins = len(np.histogram_bin_edges(values, bins='auto')) - 1
  return np.linspace(low, high, min(max(bins, 10), _MAX_BINS) + 1)


def _bins_within(edges: np.ndarray, values: np.ndarray) -> int:
  """How many of the bins `edges` the range of `values` spans."""
  width = edges[1] - edges[0]
  return int(math.ceil((values.max() - values.min()) / width))


def _distributions(estimate, name: str, inserted: np.ndarray,
                   unseen: np.ndarray, dim: int):
  """((fit to the inserted, label), (null, label)); a law is None if absent.

  From the estimate's fields (`mean`, `std`, `null`, `null_mean`,
  `null_std`) when it has them (NaN, as for a constant statistic: no
  curve); otherwise taken as `one_shot.estimate_epsilon` takes them: a fit
  to the inserted canaries, and a fit to the unseen ones (all iterates) or
  the null of a random direction in dimension d (final model).
  """
  if hasattr(estimate, 'mean'):
    fit = _gaussian(estimate.mean, estimate.std)
    kind = getattr(estimate, 'null', None)
    null_mean = getattr(estimate, 'null_mean', math.nan)
    null_std = getattr(estimate, 'null_std', math.nan)
  else:
    fit = _gaussian(*_mean_std(inserted))
    if name == 'all_iterates':
      kind, (null_mean, null_std) = 'unseen canaries', _mean_std(unseen)
    else:
      kind = ('exact cosine'
              if dim < one_shot.EXACT_NULL_BELOW_DIM else 'normal 1/d')
      null_mean, null_std = 0.0, dim**-0.5
  fit_label = (f'fit to inserted: N({fit.mean:.3g}, {fit.std:.3g}²)'
               if fit else None)
  if kind == 'exact cosine' and dim >= 2:
    return (fit, fit_label), (divergence.CosineNull(dim),
                              f'null: exact cosine law, d={dim}')
  null = _gaussian(null_mean, null_std)
  if kind == 'unseen canaries' and null:
    null_label = (f'null: fit to not inserted: '
                  f'N({null.mean:.3g}, {null.std:.3g}²)')
  else:
    null_label = f'null: N(0, 1/d), d={dim}'
  return (fit, fit_label), (null, null_label)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
  if values.size < 2:
    return math.nan, math.nan
  return float(np.mean(values)), float(np.std(values, ddof=1))


def _gaussian(mean, std) -> Optional[divergence.Gaussian]:
  """N(mean, std^2), or None unless both are finite and std > 0."""
  if mean is None or std is None:
    return None
  if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
    return None
  return divergence.Gaussian(float(mean), float(std))


def _curve_grid(edges: np.ndarray, laws) -> np.ndarray:
  """Points over the bins, and dense within 4 std of each law's mean.

  Dense near each law: a narrow null (std d^-1/2) next to inserted canaries
  far from it would otherwise fall between two points.
  """
  parts = [np.linspace(edges[0], edges[-1], 400)]
  for law in laws:
    if isinstance(law, divergence.Gaussian):
      mean, std = law.mean, law.std
    elif isinstance(law, divergence.CosineNull):
      mean, std = 0.0, law.dim**-0.5
    else:
      continue
    parts.append(np.linspace(mean - 4 * std, mean + 4 * std, 200))
  points = np.unique(np.concatenate(parts))
  # Cosines live in (-1, 1), where the cosine law's density is finite.
  return points[np.abs(points) < 1]


def _estimate_text(estimate) -> str:
  epsilon = getattr(estimate, 'epsilon', None)
  if epsilon is None:
    return 'no estimate'
  delta = getattr(estimate, 'delta', None)
  at = f' at δ={delta:.3g}' if delta is not None else ''
  return f'one-shot estimate ε = {_number(epsilon)}{at}'


def _number(value) -> str:
  if value is None or math.isnan(value):
    return 'n/a'
  return '∞' if math.isinf(value) else f'{value:.3g}'


def _epsilon_figure(result, title: str) -> mpl_figure.Figure:
  """Estimates and lower bound against the analytic epsilons, by round."""
  fig, (ax,) = _new_figure(9, 5.5, title, 1)
  positives = []
  series = _series(result)
  for key, label, marker in series:
    rounds, values = _finite_points(result.history, key)
    ax.plot(rounds,
            values,
            marker=marker,
            markersize=4,
            linestyle='--' if key.startswith(_ANALYTIC_PREFIX) else '-',
            label=f'{label}: {_number(_last(result.history, key))}')
    positives.extend(v for v in values if v > 0)
  if positives and max(positives) >= _LOG_SCALE_RATIO * min(positives):
    ax.set_yscale('log', nonpositive='mask')
    # Plain numbers, and some minor ticks labelled up to 3 decades.
    ax.yaxis.set_major_formatter(_PlainLogFormatter())
    ax.yaxis.set_minor_formatter(
        _PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(3, 1.5)))
  elif positives:
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
  if not positives:
    ax.set_ylim(0, 1)
    ax.text(0.5,
            0.6,
            'no finite positive epsilon yet',
            ha='center',
            transform=ax.transAxes)
  delta = getattr(getattr(result, 'bound', None), 'delta', None)
  ax.set_ylabel('ε' + (f' at δ={delta:.3g}' if delta is not None else ''))
  ax.set_xlabel('round')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, min_n_ticks=1))
  ax.grid(True, which='both', alpha=0.3)
  if series:
    ax.legend(fontsize=9,
              title='value at the last round (∞, n/a: not drawn)',
              title_fontsize=9)
  return fig


class _PlainLogFormatter(ticker.LogFormatter):
  """Labels the ticks `LogFormatter` labels, as 0.3 or 20 (not 3e-01)."""

  def __call__(self, x, pos=None):
    return f'{x:g}' if super().__call__(x, pos) else ''


def _series(result) -> list[tuple[str, str, str]]:
  """(history key, legend label, marker) of every series, known ones first."""
  keys = []
  for _, values in result.history:
    keys.extend(k for k in values if k not in keys)
  beta = getattr(getattr(result, 'bound', None), 'beta', None)
  series = []
  for key in sorted(keys, key=lambda k: (k not in _SERIES, k)):
    if key in _SERIES:
      label, marker = _SERIES[key]
      if key == 'audit/epsilon_lower_bound' and beta is not None:
        label = f'{label} (confidence {1 - beta:.3g})'
    elif key.startswith(_ANALYTIC_PREFIX):
      label, marker = f'analytic ε ({key[len(_ANALYTIC_PREFIX):]})', '.'
    else:
      label, marker = key, 'x'
    series.append((key, label, marker))
  return series


def _finite_points(history, key: str) -> tuple[list[int], list[float]]:
  rounds, values = [], []
  for round_num, row in history:
    value = row.get(key)
    if value is not None and math.isfinite(value):
      rounds.append(int(round_num))
      values.append(float(value))
  return rounds, values


def _last(history, key: str) -> Optional[float]:
  for _, row in reversed(history):
    if key in row:
      return float(row[key])
  return None

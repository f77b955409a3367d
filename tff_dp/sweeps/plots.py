"""PNG plots of a sweep or comparison: the privacy-utility curve, epsilon and accuracy by round.

Three files, from the runs' released values only (`tff_dp.sweeps.results`):

* `accuracy_vs_epsilon.png`: each private setting's final accuracy on the
  public test set (mean over its seeds, error bar: the range, dots: the
  runs) against its stated epsilon (the largest over its runs), the
  non-private settings' mean accuracy as a horizontal line with its range
  shaded. The x axis is logarithmic when the epsilons span more than 10x.
* `epsilon_vs_rounds.png`: each private setting's stated epsilon by round.
* `accuracy_vs_rounds.png`: each setting's accuracy by round (mean, range
  shaded); non-private settings dashed.

Rendered with matplotlib's `Figure` and its Agg canvas, not pyplot (no global
state, no display), as `tff_dp.program.audit_plots` does; each file is
replaced atomically.
"""

import io
import os
from typing import Sequence

from matplotlib import figure as mpl_figure
from matplotlib import ticker
from matplotlib.backends import backend_agg

from tff_dp import atomic_io
from tff_dp.sweeps import results

ACCURACY_VS_EPSILON = 'accuracy_vs_epsilon.png'
EPSILON_VS_ROUNDS = 'epsilon_vs_rounds.png'
ACCURACY_VS_ROUNDS = 'accuracy_vs_rounds.png'
_LOG_SCALE_RATIO = 10


def _png(fig: mpl_figure.Figure) -> bytes:
  buffer = io.BytesIO()
  backend_agg.FigureCanvasAgg(fig).print_png(buffer)
  return buffer.getvalue()


def _new_figure(title: str) -> tuple[mpl_figure.Figure, object]:
  fig = mpl_figure.Figure(figsize=(7.5, 5), dpi=110, layout='constrained')
  ax = fig.add_subplot()
  ax.set_title(title, fontsize=10)
  ax.grid(True, alpha=0.3)
  return fig, ax


def _metric(groups: Sequence[results.Group]) -> str:
  metrics = {run.metric for g in groups for run in g.runs if run.metric}
  name = metrics.pop() if len(metrics) == 1 else 'eval/accuracy'
  return name


def _epsilon_label(groups: Sequence[results.Group]) -> str:
  kinds = {r.guarantee_text for g in groups for r in g.runs if r.guarantee_kind}
  return (f'epsilon ({kinds.pop()})'
          if len(kinds) == 1 else 'epsilon (stated guarantee)')


def _delta_text(groups: Sequence[results.Group]) -> str:
  deltas = {r.delta for g in groups for r in g.runs if r.delta is not None}
  return f'delta = {deltas.pop():g}' if len(deltas) == 1 else 'deltas differ'


def _accuracy_vs_epsilon(groups: Sequence[results.Group],
                         title: str) -> mpl_figure.Figure:
  metric = _metric(groups)
  fig, ax = _new_figure(f'{title}: privacy-utility ({_delta_text(groups)})')
  xs = []
  for g in groups:
    acc = g.accuracy()
    epsilon = g.worst(r.guarantee_epsilon for r in g.runs)
    if acc is None:
      continue
    if not g.private:
      line = ax.axhline(acc.mean,
                        linestyle='--',
                        color='black',
                        label=f'{g.label} (not private): {acc.mean:.3f}')
      ax.axhspan(acc.low, acc.high, color=line.get_color(), alpha=0.1)
      continue
    if epsilon is None:
      continue  # Infinite or unknown epsilon: no point on this axis.
    xs.append(epsilon)
    bar = ax.errorbar([epsilon], [acc.mean],
                      yerr=[[acc.mean - acc.low], [acc.high - acc.mean]],
                      fmt='o',
                      capsize=4,
                      label=f'{g.label} (n={acc.n})')
    points = [r.accuracy for r in g.runs if r.accuracy is not None]
    ax.plot([epsilon] * len(points),
            points,
            '.',
            color=bar[0].get_color(),
            alpha=0.5)
  if xs and max(xs) > _LOG_SCALE_RATIO * min(xs):
    ax.set_xscale('log')
  ax.set_xlabel(_epsilon_label(groups) + ', the largest over the seeds')
  ax.set_ylabel(f'final {metric} (public test set): mean, range over seeds')
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, loc='lower right')
  return fig


def _band(ax, rounds, points, label: str, linestyle: str = '-') -> None:
  means = [p.mean for p in points]
  line, = ax.plot(rounds, means, linestyle=linestyle, label=label)
  if any(p.n > 1 for p in points):
    ax.fill_between(rounds, [p.low for p in points], [p.high for p in points],
                    color=line.get_color(),
                    alpha=0.15)


def _epsilon_vs_rounds(groups: Sequence[results.Group],
                       title: str) -> mpl_figure.Figure:
  fig, ax = _new_figure(f'{title}: epsilon by round ({_delta_text(groups)})')
  for g in groups:
    key = next((r.epsilon_key for r in g.runs if r.epsilon_key), None)
    if key is None:
      continue
    rounds, points = g.series(key)
    if rounds:
      _band(ax, rounds, points, f'{g.label} ({key.split("/")[1]})')
  ax.set_xlabel('round')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_ylabel(_epsilon_label(groups))
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, loc='upper left')
  return fig


def _accuracy_vs_rounds(groups: Sequence[results.Group],
                        title: str) -> mpl_figure.Figure:
  metric = _metric(groups)
  fig, ax = _new_figure(f'{title}: {metric} by round')
  for g in groups:
    rounds, points = g.series(metric)
    if rounds:
      _band(ax,
            rounds,
            points,
            g.label + ('' if g.private else ' (not private)'),
            linestyle='-' if g.private else '--')
  ax.set_xlabel('round')
  ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
  ax.set_ylabel(f'{metric} (public test set): mean, range over seeds')
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=8, loc='lower right')
  return fig


def write_plots(out_dir: str, groups: Sequence[results.Group], *,
                title: str) -> list[str]:
  """Renders the three plots, then writes them; returns their paths."""
  rendered = {
      ACCURACY_VS_EPSILON: _png(_accuracy_vs_epsilon(groups, title)),
      EPSILON_VS_ROUNDS: _png(_epsilon_vs_rounds(groups, title)),
      ACCURACY_VS_ROUNDS: _png(_accuracy_vs_rounds(groups, title)),
  }
  paths = []
  for name, data in rendered.items():
    path = os.path.join(out_dir, name)
    atomic_io.write_bytes_atomic(path, data)
    paths.append(path)
  return paths

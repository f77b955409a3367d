"""Where a run's released rows go: TFF release managers, one registry row each.

Every sink is a `tff.program.ReleaseManager` that receives a round's row (a
mapping of key to float) with the round number as key, and only after
`tff_dp.program.release.Releaser` has checked every key against the release
allow-list: a sink never sees a value the run may not release. The sinks
are written in `SINKS` order; metrics.csv (`csv_sink`, TFF's
`CSVFileReleaseManager` in WRITE mode in flat time, which replaces the file
atomically and drops rows with a key >= the released one) comes last, because it is the record a resumed run rebuilds
the others from (`replay`).

To add a sink (a database, a monitoring service): a `ReleaseManager` in its
own module, with `replay(rows)` if a crash can leave it ahead of
metrics.csv and `write_text` / `describe_run` / `close` if it needs them, and
one row of `SINKS`.
"""

import dataclasses
import math
import os
import shutil
from typing import Callable, Iterable, Mapping

import tensorflow_federated as tff

from tff_dp.program import csv_sink
from tff_dp.program import event_writer
from tff_dp.program import faults
from tff_dp.program import resume
from tff_dp.program import tensorboard_text

CSV_KEY_FIELD = 'round'


def csv_path(run_dir: str) -> str:
  return resume.metrics_csv_path(run_dir)


def tensorboard_dir(run_dir: str) -> str:
  return os.path.join(run_dir, 'tensorboard')


class TensorBoardReleaseManager(tff.program.ReleaseManager):
  """Scalars per round, run-level text and hparams, with timeless event times.

  TFF's `TensorBoardReleaseManager` writes through `tf.summary`, which
  stamps each event with the time it was written: the differences would
  release every round's duration (`tff_dp.program.event_writer`).

  A value that is not finite (an audit's estimate while it is undefined:
  `tff_dp.program.canary_statistics`) is no point on a chart: TensorBoard
  draws a series with one NaN as an empty chart. metrics.csv keeps it.
  """

  def __init__(self, logdir: str):
    self._logdir = logdir
    self._writer = event_writer.EventWriter(logdir)

  async def release(self, value: Mapping[str, float], key: int) -> None:
    for i, (tag, scalar) in enumerate(_plotted(value.items())):
      self._writer.scalar(tag, scalar, step=key)
      if i == 0:
        self._writer.flush()
        faults.crash_point('tensorboard_write', key)
    self._writer.flush()

  def replay(self, rows: Iterable[Mapping[str, str]]) -> None:
    """Rebuilds the event files from metrics.csv's rows (on resume).

    Event files are append-only; rewriting them from the CSV's whole rows
    (a resume cuts the line a crash may have left half-appended,
    `tff_dp.program.resume.truncate_rows`) is what guarantees that no round
    is missing or duplicated after a crash.
    """
    self._writer.close()
    shutil.rmtree(self._logdir, ignore_errors=True)
    self._writer = event_writer.EventWriter(self._logdir)
    for row in rows:
      step = int(row[CSV_KEY_FIELD])
      for tag, value in _plotted(
          (tag, float(value))
          for tag, value in row.items()
          if tag != CSV_KEY_FIELD and value not in ('', None)):
        self._writer.scalar(tag, value, step=step)
    self._writer.flush()

  def write_text(self,
                 tag: str,
                 text: str,
                 *,
                 step: int = 0,
                 verbatim: bool = False) -> None:
    """Run-level text: prose (the privacy statement) as Markdown paragraphs
    the browser wraps, or `verbatim` (the flags) as a code block
    (`tff_dp.program.tensorboard_text`)."""
    markdown = (tensorboard_text.verbatim(text)
                if verbatim else tensorboard_text.prose(text))
    self._writer.text(tag, markdown, step=step)
    self._writer.flush()

  def describe_run(self, description) -> None:
    """The hparams and the chart layout of the run, at step 0.

    Args:
      description: A `tff_dp.program.tensorboard_layout.RunDescription`
        (public settings only); the times inside its summaries are the
        writer's start, like every event's.
    """
    for summary in description.summaries(start_time=self._writer.origin):
      self._writer.summary(summary, step=0)
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


def _plotted(items: Iterable[tuple[str, float]]):
  """The (tag, value) pairs TensorBoard can draw: finite values only."""
  return ((tag, value) for tag, value in items if math.isfinite(value))


def _csv_sink(run_dir: str) -> tff.program.ReleaseManager:
  # TFF's CSVFileReleaseManager's bytes and WRITE-mode semantics, but each
  # round's row appended (O(1) per round) instead of the file re-read and
  # replaced; the line a crash may cut is cut on resume.
  return csv_sink.MetricsCsvReleaseManager(csv_path(run_dir),
                                           key_fieldname=CSV_KEY_FIELD)


@dataclasses.dataclass(frozen=True)
class Sink:
  """One destination of released rows.

  Attributes:
    name: What it writes, for readers of this table.
    build: run directory -> its `tff.program.ReleaseManager`.
  """
  name: str
  build: Callable[[str], tff.program.ReleaseManager]


SINKS = (
    Sink('tensorboard/',
         lambda run_dir: TensorBoardReleaseManager(tensorboard_dir(run_dir))),
    Sink('metrics.csv', _csv_sink),  # Last: the record of what was released.
)

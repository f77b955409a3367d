"""TensorBoard event files whose timestamps carry no timing information.

Every TensorBoard event records the wall time at which it was written, and
TensorBoard plots it ("relative time"). For a round's values that is the
time the round ended: the differences between rounds are the round times,
which grow with the size of the hidden cohort (the side channel the released
`time/round_seconds` used to be). `tf.summary` offers no way to set it, so the
released events are written here, with TensorBoard's own pure-Python event
writer and protos, at the wall time `origin + step`: the run's start (public:
the default run name carries it) plus one second per round. TensorBoard's
"step" axis is unaffected.

Run-level summaries (the flags, the privacy statement, the hparams plugin's
experiment and session, the custom-scalars layout) are written at step 0, at
the wall time `origin`; the times inside the hparams protos (the experiment's
creation, the session's start) are `origin` too.
"""

import time

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer import event_file_writer


class EventWriter:
  """Writes summaries to one TensorBoard log directory."""

  def __init__(self, logdir: str):
    self._writer = event_file_writer.EventFileWriter(logdir)
    # Whole seconds: the sub-second part of the start says nothing useful.
    self._origin = float(int(time.time()))

  @property
  def origin(self) -> float:
    """The wall time of step 0: the writer's start, in whole seconds."""
    return self._origin

  def summary(self, summary: summary_pb2.Summary, *, step: int) -> None:
    """Writes any summary proto, at the wall time `origin + step`."""
    self._writer.add_event(
        event_pb2.Event(wall_time=self._origin + step,
                        step=step,
                        summary=summary))

  def scalar(self, tag: str, value: float, *, step: int) -> None:
    self.summary(summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=float(value))]),
                 step=step)

  def text(self, tag: str, text: str, *, step: int) -> None:
    """Text for TensorBoard's text plugin, which renders it as Markdown."""
    self.summary(text_summary.text_pb(tag, text), step=step)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()

"""Fault injection for crash tests: SIGKILL ourselves at a named point.

Setting TFF_DP_CRASH_AT=<point>:<round> (e.g. `checkpoint_write:2`) makes the
process kill itself with SIGKILL when it reaches that point in that round, the
way a preemption or an OOM kill would, with no cleanup at all. The points are
the places where a crash is hardest to survive: `between_rounds` (after a
round was released), `checkpoint_write` (a checkpoint half on disk) and
`tensorboard_write` (a round half released) and `csv_write` (half of the
round's metrics.csv line appended, the cut line a resume must remove). Unset,
this costs one dict lookup.
"""

import os
import signal

ENV_VAR = 'TFF_DP_CRASH_AT'
POINTS = ('between_rounds', 'checkpoint_write', 'tensorboard_write',
          'csv_write')


def armed(point: str, round_num: int) -> bool:
  """Whether TFF_DP_CRASH_AT names this point and round (for a point that
  leaves a half-done write behind before `crash_point`)."""
  return os.environ.get(ENV_VAR) == f'{point}:{round_num}'


def crash_point(point: str, round_num: int) -> None:
  """Kills the process if TFF_DP_CRASH_AT names this point and round."""
  if armed(point, round_num):
    os.kill(os.getpid(), signal.SIGKILL)

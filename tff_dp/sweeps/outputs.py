"""The files of a finished sweep or comparison: the table, the wall times apart, the plots.

One entry point for both programs, so that `./run.sh compare` over a sweep's
runs writes what the sweep wrote.
"""

import dataclasses
import os
from typing import Mapping, Sequence

from tff_dp.sweeps import plots
from tff_dp.sweeps import report
from tff_dp.sweeps import results


@dataclasses.dataclass(frozen=True)
class Written:
  """What `write_outputs` wrote: the Markdown tables and every file."""
  table: str
  wall_times: str
  files: list[str]


def write_outputs(out_dir: str, groups: Sequence[results.Group], *,
                  wall_seconds: Mapping[str, float], wall_source: str,
                  title: str) -> Written:
  """Writes results.{csv,md}, nonprivate/wall_times.{csv,md} and the plots."""
  os.makedirs(out_dir, exist_ok=True)
  table = report.write_table(out_dir, groups)
  wall = report.write_wall_times(out_dir,
                                 groups,
                                 wall_seconds,
                                 source=wall_source)
  files = [
      os.path.join(out_dir, name)
      for name in (report.TABLE_MD, report.TABLE_CSV)
  ]
  files += plots.write_plots(out_dir, groups, title=title)
  files += [
      os.path.join(out_dir, report.NONPRIVATE_DIR, name)
      for name in (report.WALL_TIMES_MD, report.WALL_TIMES_CSV)
  ]
  return Written(table=table, wall_times=wall, files=files)

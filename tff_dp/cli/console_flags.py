"""The training program's console flags: how it reports, not what it runs.

They are not settings of the run (`tff_dp.config.TrainConfig` has neither):
`--log_every` paces the progress lines, `--computation_cache` names where
traced computations are reused between runs
(`tff_dp.program.computation_cache`).
"""

from absl import flags

from tff_dp.cli import checked_flags
from tff_dp.cli import console

DEFAULT_COMPUTATION_CACHE = '~/.cache/tff_dp/computations'


def define_console_flags(fv: flags.FlagValues) -> None:
  """How the program reports progress (not a setting of the run)."""
  checked_flags.define_int(
      fv,
      'log_every',
      0, 'Print a full progress line every this many rounds, besides the '
      'first and the last round and, when they are rarer, the rounds that '
      f'evaluate. 0: about {console.DEFAULT_PROGRESS_LINES} lines per run '
      f'({console.TERMINAL_PROGRESS_LINES} on a terminal, where one line in '
      'between shows the latest round).',
      lower=0,
      upper=checked_flags.MAX_ROUNDS)
  flags.DEFINE_string(
      'computation_cache',
      DEFAULT_COMPUTATION_CACHE,
      'Directory where the traced TFF computations of a run are kept and '
      'reused by later runs of the same configuration and versions (a '
      'faster start; README, "Threat model": what it holds); empty: no '
      'cache. The default is under $XDG_CACHE_HOME instead of ~/.cache '
      'when that is set.',
      flag_values=fv)

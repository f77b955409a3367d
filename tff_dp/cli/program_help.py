"""--help for the programs: their own flags, in groups, and exit code 0.

absl's `--help` lists the flags defined by the main module only; ours are
defined by `cli_flags` and its helpers, so it listed none and exited 1, and
`--helpfull` lists every module's flags (absl's and the libraries' too) in
alphabetical order. `define_help_flags` replaces absl's help flags:

  --help, -?, --helpshort  the program's usage and its flags by group, in the
                           order of the groups (the README's), each flag with
                           its help and default;
  --helpfull               every flag, absl's listing.

Both print to stdout and exit 0.
"""

import os
import sys
import textwrap
from typing import Callable, Sequence

from absl import flags

# A group of flags: (title, flag names in the order they are shown).
Group = tuple[str, Sequence[str]]

_WIDTH = 80
_FOOTER = ('Flags can also come from a file: --flagfile=FILE (one --flag=value '
           'per line, e.g. configs/*.cfg); later flags override earlier ones. '
           '--helpfull lists every flag, the libraries\' included.')


def flag_groups(
    definers: Sequence[tuple[str, Callable[[flags.FlagValues], None]]]
) -> list[Group]:
  """The names each group's definer defines, in definition order.

  Args:
    definers: (title, function defining the group's flags on a
      `FlagValues`), e.g. `cli_flags.TRAIN_FLAG_GROUPS`.
  """
  groups = []
  for title, define in definers:
    scratch = flags.FlagValues()
    define(scratch)
    groups.append((
        title,
        [
            name for name, flag in scratch._flags().items()  # pylint: disable=protected-access
            if name == flag.name  # Not a short name.
        ]))
  return groups


def defined_by(fv: flags.FlagValues, module_name: str) -> list[str]:
  """The names of the flags that module `module_name` defined on `fv`
  (itself, not through a helper), in definition order."""
  return [flag.name for flag in fv.get_flags_for_module(module_name)]


def _describe(flag: flags.Flag) -> str:
  name = f'--[no]{flag.name}' if flag.boolean else f'--{flag.name}'
  if flag.short_name:
    name = f'-{flag.short_name}, {name}'
  text = f'{name}: {" ".join((flag.help or "").split())}'
  default = flag.default_as_str
  if default:
    if len(default) > 2 and default[0] == default[-1] == "'":
      default = default[1:-1]  # absl quotes every default: '100'.
    text += f' (default: {default})'
  # Whole words only: an enum's <a|b|c> or a path stays on one line.
  return textwrap.fill(text,
                       width=_WIDTH,
                       initial_indent='  ',
                       subsequent_indent='      ',
                       break_long_words=False,
                       break_on_hyphens=False)


def grouped_help(fv: flags.FlagValues, doc: str,
                 groups: Sequence[Group]) -> str:
  """The program's usage `doc`, then each group's flags defined on `fv`."""
  lines = [doc.strip(), '']
  for title, names in groups:
    present = [fv[name] for name in names if name in fv]
    if not present:
      continue
    lines.append(f'{title}:')
    lines += [_describe(flag) for flag in present]
    lines.append('')
  lines.append(textwrap.fill(_FOOTER, width=_WIDTH, break_on_hyphens=False))
  return '\n'.join(lines) + '\n'


def _print_and_exit(text: str) -> None:
  try:
    sys.stdout.write(text)
    sys.stdout.flush()
  except BrokenPipeError:  # `--help | head`: the reader has what it wanted.
    # What Python's documentation advises: the flush at exit must not fail.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
  sys.exit(0)


class _HelpFlag(flags.BooleanFlag):
  """A boolean flag that prints a text and exits 0 when given."""

  def __init__(self,
               name: str,
               help_text: str,
               text: Callable[[], str],
               *,
               short_name=None):
    super().__init__(name,
                     False,
                     help_text,
                     short_name=short_name,
                     allow_hide_cpp=True)
    self._text = text

  def parse(self, argument) -> None:
    if self._parse(argument):
      _print_and_exit(self._text())


def define_help_flags(fv: flags.FlagValues, *, doc: str,
                      groups: Sequence[Group]) -> None:
  """Defines --help (-?), --helpshort and --helpfull on `fv` (instead of
  `absl.app.define_help_flags`).

  Args:
    fv: The program's flags (all defined by the time they are parsed).
    doc: The program's usage text (its module docstring).
    groups: Its own flags by group, in the order to show them.
  """
  short = lambda: grouped_help(fv, doc, groups)
  full = lambda: f'{doc.strip()}\n\nflags:\n{fv.get_help()}\n'
  flags.DEFINE_flag(_HelpFlag('help',
                              'Show this program\'s flags by group.',
                              short,
                              short_name='?'),
                    flag_values=fv)
  flags.DEFINE_flag(_HelpFlag('helpshort', 'The same as --help.', short),
                    flag_values=fv)
  flags.DEFINE_flag(_HelpFlag(
      'helpfull', 'Show every flag, absl\'s and the '
      'libraries\' included.', full),
                    flag_values=fv)

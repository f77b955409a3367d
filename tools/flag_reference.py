"""The README's flag reference, generated from the training program's flags.

Each flag group of `tff_dp.cli.cli_flags.TRAIN_FLAG_GROUPS`, then the
training, sweep and pretraining programs' own flags (`REFERENCE_GROUPS`), becomes a table
of its flags with their defaults and help, so the reference cannot drift from
the definitions: `tests/tools/test_flag_reference.py` compares the README
with this output.

Usage (from the repository root):
  python -m tools.flag_reference            # prints the reference
  python -m tools.flag_reference README.md  # rewrites it between the markers
"""

import sys

from absl import flags

from tff_dp.cli import cli_flags
from tff_dp.cli import console_flags
from tff_dp.cli import pretrain
from tff_dp.cli import sweep_flags

# The training flags (every program that trains takes them), then the flags
# only `./run.sh train`, `./run.sh sweep` or `./run.sh pretrain` has.
REFERENCE_GROUPS = cli_flags.TRAIN_FLAG_GROUPS + (
    ('Console (`./run.sh train` only)', console_flags.define_console_flags),
    ('Sweep (`./run.sh sweep` only)', sweep_flags.define_sweep_flags),
    ('Pretraining (`./run.sh pretrain` only)', pretrain.define_pretrain_flags),
)
README_START = '<!-- flag-reference:start -->\n'
README_END = '<!-- flag-reference:end -->'


def markdown_reference(groups=REFERENCE_GROUPS) -> str:
  """The flag reference of the README, generated from the flag definitions."""
  lines = []
  for title, define in groups:
    fv = flags.FlagValues()
    define(fv)
    lines += [
        f'**{title}**', '', '| flag | default | meaning |',
        '| --- | --- | --- |'
    ]
    for name, flag in fv._flags().items():  # pylint: disable=protected-access
      if name != flag.name:  # Short-name aliases.
        continue
      default = (flag.default_as_str or "''").strip("'")
      # absl prefixes enum help with "<a|b|c>: "; escape the bars for Markdown.
      text = ' '.join(flag.help.split()).replace('|', '\\|')
      lines.append(f'| `--{name}` | `{default}` | {text} |')
    lines.append('')
  return '\n'.join(lines)


def update_readme(path: str) -> None:
  """Rewrites the flag reference between the README's markers."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  start = text.index(README_START) + len(README_START)
  end = text.index(README_END)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text[:start] + markdown_reference() + text[end:])


if __name__ == '__main__':
  if len(sys.argv) > 1:
    update_readme(sys.argv[1])
  else:
    print(markdown_reference())

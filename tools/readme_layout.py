"""The README's layout section, generated from the packages' docstrings.

Each subpackage of `tff_dp` and each module in it is listed with the first
line of its docstring, packages in layer order (bottom first, as
`tff_dp/__init__.py` states it), so the section cannot drift from the code:
`tests/tools/test_readme_layout.py` compares the README with this output.

Usage (from the repository root):
  python -m tools.readme_layout            # prints the section
  python -m tools.readme_layout README.md  # rewrites it between the markers
"""

import ast
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README_START = '<!-- layout:start -->\n'
README_END = '<!-- layout:end -->'
# Bottom first; modules directly in tff_dp/ are listed with their layer.
LAYERS = ('atomic_io', 'checks', 'processes', 'cohorts', 'privacy', 'data',
          'audit', 'mechanisms', 'config', 'simulation_path', 'config_checks',
          'models', 'algorithms', 'execution', 'program', 'sweeps', 'cli',
          'lazy_imports', 'api')
_OTHER_ROWS = (
    ('`examples/`', 'runnable examples of the Python API (the tests run '
     'them)'),
    ('`benchmarks/`', '`./run.sh bench`: speed, memory and start-up '
     'measurements (see `benchmarks/README.md`)'),
    ('`tools/`', 'developer tools: the fault campaign, README generators'),
    ('`tests/`', 'pytest; markers `tff`, `e2e`, `slow` '
     '(`./run.sh test --run-slow`)'),
)


def first_line(path: str) -> str:
  """The first line of a Python file's module docstring."""
  with open(path, encoding='utf-8') as f:
    docstring = ast.get_docstring(ast.parse(f.read(), filename=path))
  if not docstring:
    raise ValueError(f'{path}: no module docstring')
  return docstring.splitlines()[0].rstrip('.')


def _rows(layer: str) -> list[tuple[str, str]]:
  """(path, first docstring line) of a layer: the package, then modules."""
  package = os.path.join(REPO_ROOT, 'tff_dp', layer)
  if not os.path.isdir(package):
    return [(f'`tff_dp/{layer}.py`', first_line(package + '.py'))]
  rows = [(f'**`tff_dp/{layer}/`**',
           f'**{first_line(os.path.join(package, "__init__.py"))}**')]
  for name in sorted(os.listdir(package)):
    path = os.path.join(package, name)
    if name.endswith('.py') and name != '__init__.py':
      rows.append((f'`{name}`', first_line(path)))
    elif os.path.exists(os.path.join(path, '__init__.py')):
      rows.append((f'`{name}/`', first_line(os.path.join(path, '__init__.py'))))
  return rows


def layout_table() -> str:
  """The whole section: a table of every layer and module."""
  lines = ['| path | what |', '| --- | --- |']
  for layer in LAYERS:
    lines += [f'| {path} | {what} |' for path, what in _rows(layer)]
  lines += [f'| {path} | {what} |' for path, what in _OTHER_ROWS]
  return '\n'.join(lines) + '\n'


def rewrite_readme(path: str) -> None:
  """Replaces the text between the README's layout markers."""
  with open(path, encoding='utf-8') as f:
    text = f.read()
  start = text.index(README_START) + len(README_START)
  end = text.index(README_END)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text[:start] + layout_table() + text[end:])


if __name__ == '__main__':
  if len(sys.argv) > 1:
    rewrite_readme(sys.argv[1])
  else:
    sys.stdout.write(layout_table())

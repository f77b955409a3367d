"""The README's layout section matches the packages' docstrings."""

import os

from tests import helpers
from tools import readme_layout


def test_readme_layout_is_generated_from_the_docstrings():
  with open(os.path.join(helpers.REPO_ROOT, 'README.md'),
            encoding='utf-8') as f:
    text = f.read()
  start = text.index(readme_layout.README_START) + len(
      readme_layout.README_START)
  section = text[start:text.index(readme_layout.README_END)]
  assert section == readme_layout.layout_table(), (
      'README.md layout is stale: run python -m tools.readme_layout README.md')


def test_every_layer_is_listed():
  listed = set(readme_layout.LAYERS)
  package = os.path.join(helpers.REPO_ROOT, 'tff_dp')
  for name in os.listdir(package):
    if name.endswith('.py') and name != '__init__.py':
      assert name[:-3] in listed, name
    elif os.path.exists(os.path.join(package, name, '__init__.py')):
      assert name in listed, name

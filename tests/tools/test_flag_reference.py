"""The README's flag reference matches the flag definitions."""

import os

from tests.helpers import REPO_ROOT
from tools import flag_reference


def test_readme_flag_reference_is_generated_from_the_definitions():
  with open(os.path.join(REPO_ROOT, 'README.md')) as f:
    readme = f.read()
  start = readme.index(flag_reference.README_START) + len(
      flag_reference.README_START)
  end = readme.index(flag_reference.README_END)
  assert readme[start:end] == flag_reference.markdown_reference(), (
      'README flag reference is stale: run '
      '`.venv/bin/python -m tools.flag_reference README.md`')

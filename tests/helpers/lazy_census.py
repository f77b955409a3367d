"""Runs the training program and reports which deferred modules really ran.

  python -m tests.helpers.lazy_census OUT.json [train flags...]

The same as `python -m tff_dp.cli.train [flags...]`, and at exit writes to
OUT.json, for each of `tff_dp.lazy_imports.DEFERRED`, 'loaded' (its code
ran), 'deferred' (imported, never used) or 'absent'. The program's own
`launch.start` installs the deferral, as in a user's run.
"""

import atexit
import json
import runpy
import sys

from tff_dp import lazy_imports


def census() -> dict[str, str]:
  return {
      name: ('loaded' if lazy_imports.loaded(name) else
             'deferred' if name in sys.modules else 'absent'
            ) for name in lazy_imports.DEFERRED
  }


def main() -> None:
  out = sys.argv[1]

  def write() -> None:
    with open(out, 'w') as f:
      json.dump(census(), f)

  atexit.register(write)
  sys.argv = ['tff_dp.cli.train', *sys.argv[2:]]
  runpy.run_module('tff_dp.cli.train', run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()

"""Exit codes of the programs, and the error that ends one with a single line.

Shared by `train`, `epsilon` and `import_data` so that a script driving them
sees one meaning per code: 1 I/O, 2 bad input (flag, config, data file,
checkpoint), 3 internal error or environment failure (logged), 130 Ctrl-C.
SIGTERM ends a run with 128 + its signal number, as shells report it.
"""

EXIT_IO = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_SIGINT = 130


class UserError(Exception):
  """Bad input: reported as one line naming the thing and the value."""

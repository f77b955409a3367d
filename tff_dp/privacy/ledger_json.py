"""Ledger files: strict JSON read and atomic write, shared by every ledger kind.

The central (`privacy_ledger.PrivacyLedger`), local
(`local_accounting.LocalPrivacyLedger`) and record-level
(`example_accounting.SiloLedger`) ledgers differ in content, not in how they
reach the disk: written atomically (a crash leaves the old file or the new
one; the central ledger's file is then extended in place, and read back up
to its last whole round if a crash cut it: `PrivacyLedger.save`), read
without accepting NaN or Infinity (an epsilon computed from them would be
meaningless), and every error names the file.
"""

import dataclasses
import json
import os
from typing import Any, Callable, Optional, TypeVar

from tff_dp import atomic_io

T = TypeVar('T')


@dataclasses.dataclass(frozen=True)
class Journal:
  """A ledger's JSON as lines a file can grow by (`tff_dp.program.ledger_journal`).

  Attributes:
    head: The ledger's JSON object without its rounds, as text.
    lines: Each round's JSON text, in order; the ledger's own list, which
      only grows: read only the first `count`.
    count: How many of `lines` the ledger held.
  """
  head: str
  lines: list[str]
  count: int


class EncodedDict(dict):
  """A ledger's JSON object that also knows its rounds as lines of text.

  A dict like any other (equal to, and read as, the plain one), plus
  `journal`: the ledger's head and each round's JSON text, kept as its rounds
  were recorded, so that a checkpoint appends the new rounds' lines instead
  of encoding and writing every round again (`tff_dp.program.ledger_journal`).
  """

  def __init__(self, content: dict[str, Any], *, journal: Journal):
    super().__init__(content)
    self.journal = journal


def save(path: str, content: dict[str, Any]) -> None:
  """Writes `content` as JSON atomically (temp file, fsync, rename)."""
  atomic_io.write_text_atomic(os.fspath(path),
                              json.dumps(content, indent=1, allow_nan=False))


def refuse_constant(name: str):
  """`json.loads`' parse_constant: NaN and Infinity are no ledger values."""
  raise ValueError(f'{name} is not valid JSON')


def load(path: str,
         parse: Callable[[Any], T],
         *,
         what: str,
         error: type[ValueError],
         cut_short: Optional[Callable[[str], Any]] = None) -> T:
  """Reads `path` and returns `parse(json)`.

  Args:
    path: The ledger file.
    parse: The ledger's `from_json`; raises `error` (a ValueError) if the
      content is malformed.
    what: The ledger's name in messages ('Privacy ledger', ...).
    error: The exception raised for unreadable or malformed content.
    cut_short: If given, reads text that is not JSON as a file a crash cut
      while it was extended (raises `error` if it is not one either).

  Raises:
    FileNotFoundError: `path` does not exist (the message names it).
    error: Not UTF-8, not JSON, NaN/Infinity, or rejected by `parse`.
  """
  path = os.fspath(path)
  try:
    with open(path, encoding='utf-8') as f:
      text = f.read()
    try:
      content = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError:
      if cut_short is None:
        raise
      content = cut_short(text)
    return parse(content)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{what} not found: {path}') from e
  except ValueError as e:
    # Covers UnicodeDecodeError, json.JSONDecodeError and `error`.
    raise error(f'Invalid {what[0].lower()}{what[1:]} {path}: {e}') from e

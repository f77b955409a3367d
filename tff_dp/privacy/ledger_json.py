"""Ledger files: strict JSON read and atomic write, shared by every ledger kind.

The central (`privacy_ledger.PrivacyLedger`), local
(`local_accounting.LocalPrivacyLedger`) and record-level
(`example_accounting.SiloLedger`) ledgers differ in content, not in how they
reach the disk: written atomically (a crash leaves the old file or the new
one), read without accepting NaN or Infinity (an epsilon computed from them
would be meaningless), and every error names the file.
"""

import json
import os
from typing import Any, Callable, TypeVar

from tff_dp import atomic_io

T = TypeVar('T')


class EncodedDict(dict):
  """A ledger's JSON object that also knows its own JSON text.

  A dict like any other (equal to, and read as, the plain one), plus
  `json_text()`: exactly `json.dumps(self)`, assembled from text the ledger
  kept as its rounds were recorded, so that a checkpoint after 1,500 rounds
  does not encode every round's event again
  (`tff_dp.program.checkpoint`).
  """

  def __init__(self, content: dict[str, Any], text: Callable[[], str]):
    super().__init__(content)
    self._text = text

  def json_text(self) -> str:
    return self._text()


def save(path: str, content: dict[str, Any]) -> None:
  """Writes `content` as JSON atomically (temp file, fsync, rename)."""
  atomic_io.write_text_atomic(os.fspath(path),
                              json.dumps(content, indent=1, allow_nan=False))


def load(path: str, parse: Callable[[Any], T], *, what: str,
         error: type[ValueError]) -> T:
  """Reads `path` and returns `parse(json)`.

  Args:
    path: The ledger file.
    parse: The ledger's `from_json`; raises `error` (a ValueError) if the
      content is malformed.
    what: The ledger's name in messages ('Privacy ledger', ...).
    error: The exception raised for unreadable or malformed content.

  Raises:
    FileNotFoundError: `path` does not exist (the message names it).
    error: Not UTF-8, not JSON, NaN/Infinity, or rejected by `parse`.
  """
  path = os.fspath(path)

  def refuse_constant(name):
    raise error(f'{name} is not valid JSON')

  try:
    with open(path, encoding='utf-8') as f:
      return parse(json.load(f, parse_constant=refuse_constant))
  except FileNotFoundError as e:
    raise FileNotFoundError(f'{what} not found: {path}') from e
  except ValueError as e:
    # Covers UnicodeDecodeError, json.JSONDecodeError and `error`.
    raise error(f'Invalid {what[0].lower()}{what[1:]} {path}: {e}') from e

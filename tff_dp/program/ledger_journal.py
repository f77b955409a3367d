"""The checkpoints' ledgers as append-only files beside them, not in each meta.json.

Every round's checkpoint must hold the ledgers that charge it. Copied into
each meta.json they grew with the run (~230 KB written and fsync'ed per
round by round 1,500). Instead each ledger whose JSON knows its rounds as
lines (`ledger_json.EncodedDict.journal`) is kept in one file in the
checkpoint directory,

  checkpoints/ledger-<name>.jsonl   the ledger's JSON without its rounds on
                                    the first line, then one round per line,

which grows by the new rounds' lines (appended and fsync'ed), and meta.json
holds a reference to a prefix of it:

  {"journal": "ledger-<name>.jsonl", "records": r, "bytes": n,
   "sha256": <of the first n bytes>}

The hash is kept running as lines are appended, so a round's cost does not
grow with the run. Older checkpoints refer to shorter prefixes of the same
file, which appending never changes; a crash mid-append leaves bytes past
every checkpoint's prefix, and the next process (whose journal state starts
empty) rewrites the file atomically from its ledger before appending again.
`resolve` puts each ledger's JSON back in place of its reference, verified,
so that readers see the meta.json of checkpoint format 1.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any

from tff_dp import atomic_io
from tff_dp.privacy import ledger_json

_KEYS = frozenset({'journal', 'records', 'bytes', 'sha256'})


class JournalError(ValueError):
  """A journal does not hold what a checkpoint refers to; names the file."""


@dataclasses.dataclass
class _Written:
  """A journal file as this process last left it."""
  head: str
  records: int
  stat: tuple[int, int, int]  # inode, size, mtime_ns
  digest: Any  # hashlib sha256 of the whole file.


def file_name(name: str) -> str:
  return f'ledger-{name}.jsonl'


class LedgerJournals:
  """Writes the ledgers of one checkpoint directory's meta.json."""

  def __init__(self, directory: str):
    self._directory = directory
    self._written: dict[str, _Written] = {}

  def record(self, ledgers: dict[str, Any]) -> dict[str, Any]:
    """`ledgers` with each journaled ledger appended to its file and
    replaced by a reference to it; the others as they are."""
    result = {}
    for name, value in ledgers.items():
      journal = getattr(value, 'journal', None)
      result[name] = (value if journal is None else self._append(name, journal))
    return result

  def _append(self, name: str, journal: ledger_json.Journal) -> dict[str, Any]:
    path = os.path.join(self._directory, file_name(name))
    written = self._written.get(name)
    if (written is None or written.head != journal.head or
        written.records > journal.count or
        atomic_io.file_identity(path) != written.stat):
      written = self._rewrite(path, journal)
    elif written.records < journal.count:
      data = ''.join(
          f'{line}\n'
          for line in journal.lines[written.records:journal.count]).encode()
      with open(path, 'ab') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
      written.digest.update(data)
      written.records = journal.count
      written.stat = atomic_io.file_identity(path)
    self._written[name] = written
    return {
        'journal': file_name(name),
        'records': written.records,
        'bytes': written.stat[1],
        'sha256': written.digest.hexdigest()
    }

  @staticmethod
  def _rewrite(path: str, journal: ledger_json.Journal) -> _Written:
    text = ''.join(
        f'{line}\n' for line in [journal.head] + journal.lines[:journal.count])
    data = text.encode()
    atomic_io.write_bytes_atomic(path, data)
    return _Written(journal.head, journal.count, atomic_io.file_identity(path),
                    hashlib.sha256(data))


def is_reference(value: Any) -> bool:
  return isinstance(value, dict) and set(value) == _KEYS


def resolve(directory: str, ledgers: dict[str, Any]) -> dict[str, Any]:
  """`ledgers` with each reference replaced by the ledger's JSON it names.

  Raises:
    JournalError: A journal is missing, shorter than referred to, differs
      from its hash, or is not a ledger's lines (the message names it).
  """
  return {
      name: _read(directory, value) if is_reference(value) else value
      for name, value in ledgers.items()
  }


def _read(directory: str, reference: dict[str, Any]) -> dict[str, Any]:
  name = reference['journal']
  if not isinstance(name, str) or os.path.basename(name) != name:
    raise JournalError(f'bad ledger journal name {name!r:.60}')
  path = os.path.join(directory, name)
  try:
    with open(path, 'rb') as f:
      data = f.read(reference['bytes'])
  except (OSError, TypeError, ValueError) as e:
    raise JournalError(f'{path}: unreadable ({e})') from e
  if len(data) != reference['bytes']:
    raise JournalError(f'{path}: {len(data)} bytes, the checkpoint refers to '
                       f'{reference["bytes"]} (truncated?)')
  if hashlib.sha256(data).hexdigest() != reference['sha256']:
    raise JournalError(f'{path}: checksum of its first {len(data)} bytes '
                       'differs from the checkpoint\'s (corrupt)')
  try:
    head, *lines = data.decode('utf-8').split('\n')[:-1]
    content = json.loads(head)
    content['rounds'] = [json.loads(line) for line in lines]
  except (UnicodeDecodeError, ValueError, TypeError) as e:
    raise JournalError(f'{path}: not a ledger\'s lines ({e})') from e
  if len(content['rounds']) != reference['records']:
    raise JournalError(f'{path}: {len(content["rounds"])} rounds, the '
                       f'checkpoint refers to {reference["records"]}')
  return content

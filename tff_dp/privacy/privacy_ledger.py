"""The privacy ledger: the DP events of one run's released rounds, as JSON.

The ledger is what a run is charged: `tff_dp.privacy.accounting` composes
its events into epsilons. Its file is written in full (atomically) once,
then extended in place after every round by the new rounds' lines, so that
what a round writes does not grow with the run (a rewrite of every round
took ~16 ms of fsync'ed I/O at round 1,500); it is read back strictly on
resume (`tff_dp.privacy.ledger_json`), and a file a crash cut inside its
last round is read up to its last whole round.
"""

import dataclasses
import json
import numbers
import os
from typing import Any, Optional

from dp_accounting import dp_event

from tff_dp import atomic_io
from tff_dp.privacy import accounting
from tff_dp.privacy import dp_event_json
from tff_dp.privacy import ledger_json

LEDGER_FORMAT_VERSION = 1
# What ends `to_text`: the extension of a saved file starts where it starts.
_TAIL = '\n]}\n'
_ROUNDS_OPEN = ', "rounds": ['


@dataclasses.dataclass(frozen=True)
class _SavedFile:
  """The file `save` last wrote, as it left it (to extend it in place)."""
  path: str
  rounds: int
  stat: tuple[int, int, int]  # inode, size, mtime_ns


class PrivacyLedger:
  """The events of one run's released rounds, in order; persisted as JSON.

  Record (and save) a round's event before its result is released or
  checkpointed: a crash then over-charges by at most one round instead of
  releasing an uncharged one. Rounds with an empty Poisson cohort are rounds.

  JSON format (`to_json`), version 1:
    {"format_version": 1,
     "neighboring_relation": "ADD_OR_REMOVE_ONE" | "REPLACE_ONE" | ...,
     "rounds": [{"round": 1, "event": <event>}, {"round": 2, ...}, ...]}
  where <event> is {"name": <dp_accounting.dp_event class name>, <attribute>:
  <number | event | list>, ...}, e.g. {"name": "PoissonSampledDpEvent",
  "sampling_probability": 0.035, "event": {"name": "GaussianDpEvent",
  "noise_multiplier": 1.2}}. Any dp_accounting event class can be stored
  (Laplace for local DP, tree aggregation, composed events, ...).
  """

  def __init__(self, relation: accounting.NeighboringRelation):
    if not isinstance(relation, accounting.NeighboringRelation):
      raise TypeError(f'relation must be a accounting.NeighboringRelation, got '
                      f'{relation!r}.')
    self._relation = relation
    self._events = []
    # Identical events merged as they are recorded, so that computing epsilon
    # costs O(distinct events), not O(rounds): it runs twice per round.
    self._groups: dict[str, list] = {}
    # Each distinct event's JSON (object and text) and each round's line of
    # the file, kept as rounds are recorded: the file is rewritten after
    # every round, and encoding every round's event again each time (with
    # json's pure-Python encoder, which `indent` selects) grew with the run.
    self._event_json: dict[str, tuple[dict, str]] = {}
    self._round_json: list[dict] = []
    self._round_lines: list[str] = []
    self._saved: Optional[_SavedFile] = None

  @property
  def relation(self) -> accounting.NeighboringRelation:
    return self._relation

  @property
  def rounds(self) -> int:
    return len(self._events)

  @property
  def events(self) -> list[dp_event.DpEvent]:
    return list(self._events)

  def _check_event(self, event: dp_event.DpEvent) -> str:
    if not isinstance(event, dp_event.DpEvent):
      raise TypeError(f'event must be a DpEvent, got {event!r}.')
    # Refuses now what could not be saved later.
    key = dp_event_json.event_key(event)
    # An event no accountant can compose under this ledger's relation was
    # produced for another sampler (e.g. a fixed-size round in a Poisson run).
    if not any(
        accounting.make_accountant(
            kind, self._relation, accounting.PLD_DISCRETIZATION).supports(event)
        for kind in accounting.AccountantKind):
      raise accounting.UnsupportedAccountingError(
          f'No accountant can compose {event} under this ledger\'s relation '
          f'{self._relation.name}; was it built for another sampler?')
    return key

  def record(self, round_num: int, event: dp_event.DpEvent) -> None:
    """Appends the event of round `round_num` (must be `rounds + 1`)."""
    if isinstance(round_num,
                  bool) or not isinstance(round_num, numbers.Integral):
      raise TypeError(f'round_num must be an int, got {round_num!r}.')
    if round_num != self.rounds + 1:
      raise ValueError(f'Expected round {self.rounds + 1} (rounds are 1-based '
                       f'and consecutive), got {round_num}.')
    key = self._check_event(event)
    self._events.append(event)
    if key in self._groups:
      self._groups[key][1] += 1
    else:
      self._groups[key] = [event, 1]
    if key not in self._event_json:
      as_json = dp_event_json.event_to_json(event)
      self._event_json[key] = (as_json, json.dumps(as_json, allow_nan=False))
    as_json, text = self._event_json[key]
    self._round_json.append({'round': round_num, 'event': as_json})
    self._round_lines.append(f'{{"round": {round_num}, "event": {text}}}')

  def _composed(self) -> list[dp_event.DpEvent]:
    return [
        event if count == 1 else dp_event.SelfComposedDpEvent(event, count)
        for event, count in self._groups.values()
    ]

  def epsilon(
      self,
      *,
      delta: float,
      accountant: accounting.AccountantKind,
      pld_discretization: float = accounting.PLD_DISCRETIZATION) -> float:
    return accounting.compute_epsilon(self._composed(),
                                      delta=delta,
                                      accountant=accountant,
                                      relation=self._relation,
                                      pld_discretization=pld_discretization)

  def epsilon_with(
      self,
      *events: dp_event.DpEvent,
      delta: float,
      accountant: accounting.AccountantKind,
      pld_discretization: float = accounting.PLD_DISCRETIZATION) -> float:
    """Epsilon if more rounds, one per event of `events`, ran (for budget
    checks: the next round, or the next rounds that share one TFF call)."""
    for event in events:
      self._check_event(event)
    return accounting.compute_epsilon(self._composed() + list(events),
                                      delta=delta,
                                      accountant=accountant,
                                      relation=self._relation,
                                      pld_discretization=pld_discretization)

  def to_json(self) -> ledger_json.EncodedDict:
    """The ledger as JSON (see the class docstring); do not modify it: the
    rounds of one event share that event's object. Its `journal` holds each
    round's text, kept as rounds were recorded (checkpoints append it)."""
    rounds = len(self._round_json)
    return ledger_json.EncodedDict(
        {
            'format_version': LEDGER_FORMAT_VERSION,
            'neighboring_relation': self._relation.name,
            'rounds': self._round_json[:rounds],
        },
        journal=ledger_json.Journal(head=self._head_text(),
                                    lines=self._round_lines,
                                    count=rounds))

  def _head_text(self) -> str:
    """The ledger's JSON object without its rounds, as text."""
    return json.dumps({
        'format_version': LEDGER_FORMAT_VERSION,
        'neighboring_relation': self._relation.name,
    })

  def to_text(self) -> str:
    """`to_json` as JSON text, one round per line (what `save` writes).

    Joined from the lines kept as rounds were recorded: O(rounds) in C
    string copies, not in Python encoding.
    """
    lines = ',\n'.join(self._round_lines)
    return f'{self._head_text()[:-1]}{_ROUNDS_OPEN}\n{lines}{_TAIL}'

  @classmethod
  def from_json(cls, d) -> 'PrivacyLedger':
    """Parses `to_json` output; raises `dp_event_json.LedgerFormatError` if malformed."""
    if not isinstance(d, dict):
      raise dp_event_json.LedgerFormatError(
          f'Ledger must be a JSON object, got {d!r:.80}.')
    expected = {'format_version', 'neighboring_relation', 'rounds'}
    if set(d) != expected:
      raise dp_event_json.LedgerFormatError(
          f'Ledger keys must be {sorted(expected)}, got '
          f'{sorted(d)}.')
    version = d['format_version']
    if isinstance(version, bool) or version != LEDGER_FORMAT_VERSION:
      raise dp_event_json.LedgerFormatError(
          f'Unsupported ledger format_version {version!r};'
          f' this code reads {LEDGER_FORMAT_VERSION}.')
    relation_name = d['neighboring_relation']
    known = list(accounting.NeighboringRelation.__members__)
    if not isinstance(relation_name, str) or relation_name not in known:
      raise dp_event_json.LedgerFormatError(
          f'Unknown neighboring_relation '
          f'{relation_name!r} (known: {known}).')
    ledger = cls(accounting.NeighboringRelation[relation_name])
    if not isinstance(d['rounds'], list):
      raise dp_event_json.LedgerFormatError('"rounds" must be a list.')
    for i, entry in enumerate(d['rounds']):
      where = f'rounds[{i}]'
      if not isinstance(entry, dict) or set(entry) != {'round', 'event'}:
        raise dp_event_json.LedgerFormatError(
            f'{where}: expected {{"round", "event"}}, got '
            f'{entry!r:.80}.')
      event = dp_event_json.event_from_json(entry['event'],
                                            where=f'{where}.event')
      try:
        ledger.record(entry['round'], event)
      except (TypeError, ValueError,
              accounting.UnsupportedAccountingError) as e:
        raise dp_event_json.LedgerFormatError(f'{where}: {e}') from e
    return ledger

  def save(self, path: str) -> None:
    """Makes `path` hold `to_text()`, durably, crash-safe.

    The first save (and any after the file changed behind the ledger's back,
    or the ledger lost rounds) replaces the file atomically (temp file,
    fsync, rename). Later saves cut the closing `_TAIL` and append the new
    rounds' lines and the tail, then fsync: O(new rounds), and a crash leaves
    the old file or a prefix of the new one, which `load` reads up to its
    last whole round (a round is released only after its save returned).
    """
    path = os.fspath(path)
    saved = self._saved
    if (saved is not None and saved.path == path and
        0 < saved.rounds <= self.rounds and
        atomic_io.file_identity(path) == saved.stat):
      if saved.rounds == self.rounds or self._extend(saved):
        return
    atomic_io.write_text_atomic(path, self.to_text())
    self._saved = _SavedFile(path, self.rounds, atomic_io.file_identity(path))

  def _extend(self, saved: _SavedFile) -> bool:
    """Appends the rounds after `saved.rounds`; False if the file's end is
    not the tail `to_text` wrote (then nothing was changed)."""
    tail = _TAIL.encode()
    lines = ',\n'.join(self._round_lines[saved.rounds:])
    with open(saved.path, 'r+b') as f:
      end = f.seek(0, os.SEEK_END) - len(tail)
      f.seek(end)
      if end < 0 or f.read() != tail:
        return False
      # Cut first: every state a crash can leave is then a prefix of the
      # new text (or the old file), never new bytes before old ones.
      f.truncate(end)
      f.seek(end)
      f.write(f',\n{lines}{_TAIL}'.encode())
      f.flush()
      os.fsync(f.fileno())
    self._saved = _SavedFile(saved.path, self.rounds,
                             atomic_io.file_identity(saved.path))
    return True

  @classmethod
  def load(cls, path: str) -> 'PrivacyLedger':
    """Reads a saved ledger; errors name the file. A file a crash cut while
    `save` extended it is read up to its last whole round."""
    return ledger_json.load(path,
                            cls.from_json,
                            what='Privacy ledger',
                            error=dp_event_json.LedgerFormatError,
                            cut_short=_cut_short)


def _cut_short(text: str) -> dict[str, Any]:
  """The JSON of a ledger file `save` left cut inside its rounds.

  Such a file is a prefix of `to_text`'s output: the header line, whole
  round lines, and at most one cut line at its end (a cut round or the
  cut tail). Anything else raises `LedgerFormatError`.
  """
  head, _, body = text.partition('\n')
  if not head.endswith(_ROUNDS_OPEN):
    raise dp_event_json.LedgerFormatError(
        'not JSON, nor a ledger cut short while a round was appended')
  try:
    content = json.loads(head[:-len(_ROUNDS_OPEN)] + '}')
  except ValueError as e:
    raise dp_event_json.LedgerFormatError(f'bad header line: {e}') from e
  lines = body.split('\n')
  rounds = []
  previous = ','
  for number, line in enumerate(lines, start=2):
    try:
      entry = json.loads(line.removesuffix(','),
                         parse_constant=ledger_json.refuse_constant)
    except ValueError:
      entry = None
    if not isinstance(entry, dict):
      if number == len(lines) + 1:
        break  # The line the crash cut.
      raise dp_event_json.LedgerFormatError(
          f'line {number} is not a round ({line!r:.60})')
    if not previous.endswith(','):
      raise dp_event_json.LedgerFormatError(
          f'line {number - 1} lacks the comma between rounds')
    rounds.append(entry)
    previous = line
  return dict(content, rounds=rounds)

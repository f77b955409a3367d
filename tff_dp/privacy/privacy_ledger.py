"""The privacy ledger: the DP events of one run's released rounds, as JSON.

The ledger is what a run is charged: `tff_dp.privacy.accounting` composes
its events into epsilons. Its file is rewritten atomically after every round
and read back strictly on resume (`tff_dp.privacy.ledger_json`).
"""

import json
import numbers
import os

from dp_accounting import dp_event

from tff_dp import atomic_io
from tff_dp.privacy import accounting
from tff_dp.privacy import dp_event_json
from tff_dp.privacy import ledger_json

LEDGER_FORMAT_VERSION = 1


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
      event: dp_event.DpEvent,
      *,
      delta: float,
      accountant: accounting.AccountantKind,
      pld_discretization: float = accounting.PLD_DISCRETIZATION) -> float:
    """Epsilon if one more round with `event` ran (for budget checks)."""
    self._check_event(event)
    return accounting.compute_epsilon(self._composed() + [event],
                                      delta=delta,
                                      accountant=accountant,
                                      relation=self._relation,
                                      pld_discretization=pld_discretization)

  def prefetch_with(
      self,
      events: list[dp_event.DpEvent],
      *,
      delta: float,
      accountant: accounting.AccountantKind,
      pld_discretization: float = accounting.PLD_DISCRETIZATION) -> None:
    """Starts computing, in the background, the epsilon as if rounds with
    `events` also ran (`accounting.prefetch_epsilon`)."""
    for event in events:
      self._check_event(event)
    accounting.prefetch_epsilon(self._composed() + list(events),
                                delta=delta,
                                accountant=accountant,
                                relation=self._relation,
                                pld_discretization=pld_discretization)

  def to_json(self) -> ledger_json.EncodedDict:
    """The ledger as JSON (see the class docstring); do not modify it: the
    rounds of one event share that event's object. Its `json_text()` is
    `json.dumps` of it, from the text kept as rounds were recorded."""
    rounds = len(self._round_json)
    return ledger_json.EncodedDict(
        {
            'format_version': LEDGER_FORMAT_VERSION,
            'neighboring_relation': self._relation.name,
            'rounds': self._round_json[:rounds],
        }, lambda: self._one_line_text(rounds))

  def _one_line_text(self, rounds: int) -> str:
    """`json.dumps(to_json())` as it was after `rounds` rounds."""
    head = json.dumps({
        'format_version': LEDGER_FORMAT_VERSION,
        'neighboring_relation': self._relation.name,
    })
    lines = ', '.join(self._round_lines[:rounds])
    return f'{head[:-1]}, "rounds": [{lines}]}}'

  def to_text(self) -> str:
    """`to_json` as JSON text, one round per line (what `save` writes).

    Joined from the lines kept as rounds were recorded: O(rounds) in C
    string copies, not in Python encoding.
    """
    head = json.dumps({
        'format_version': LEDGER_FORMAT_VERSION,
        'neighboring_relation': self._relation.name,
    })
    lines = ',\n'.join(self._round_lines)
    return f'{head[:-1]}, "rounds": [\n{lines}\n]}}\n'

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
    """Writes the ledger atomically (temp file, fsync, rename)."""
    atomic_io.write_text_atomic(os.fspath(path), self.to_text())

  @classmethod
  def load(cls, path: str) -> 'PrivacyLedger':
    """Reads a saved ledger; errors name the file."""
    return ledger_json.load(path,
                            cls.from_json,
                            what='Privacy ledger',
                            error=dp_event_json.LedgerFormatError)

"""Epsilons already computed, by the composition they are the epsilon of.

A run asks for the same epsilon twice per round: before round r its budget
check composes the ledger of rounds 1..r-1 with round r's event, and after
round r ran, the release composes the ledger of rounds 1..r. When round r
charged the event the check assumed, both are the same composition, and the
second computation (a PLD self-composition whose grid grows with r: the
largest part of the loop's time outside the round) is a lookup here.

The key is everything the result depends on: the composition as
`tff_dp.privacy.composition.group_events` groups it (each distinct event's
canonical JSON and its count, in order of first sight: the order in which
the PLD accountant composes them, so that a hit returns the very float the
computation gave), the accountant, the relation, delta, the PLD
discretization and the PLD budgets. A refusal (`UnsupportedAccountingError`)
is remembered too, by its message, and raised again as a new exception.

A computation runs in the caller's thread (a background thread computing
the next round's epsilons while the round trained was tried and removed: its
Python parts held the GIL the round's TFF executor needed, adding 8-10 ms to
a W1 round to save ~7 ms after it; benchmarks/README.md). Pure Python.
"""

import collections
from typing import Callable, Hashable, Sequence

from dp_accounting import dp_event

from tff_dp.privacy import composition
from tff_dp.privacy import pld_epsilon

# Enough for a run's central, local and record-level epsilons under two
# accountants, a calibration's probes and a planner's table; an entry is a
# few hundred bytes.
MAX_ENTRIES = 256


def composition_key(events: Sequence[dp_event.DpEvent]) -> tuple:
  """((event JSON, count), ...): equal for compositions accounted alike.

  `ledger + [e]` and the ledger after recording `e` have equal keys (a
  known event adds to its group's count, a new one is appended), and so do
  `[e] * n` and `[SelfComposedDpEvent(e, n)]`.
  """
  return tuple(
      (key, count) for key, _, count in composition.group_events(events))


class EpsilonCache:
  """A bounded least-recently-used map from a key to an epsilon or refusal."""

  def __init__(self, max_entries: int = MAX_ENTRIES):
    self._max_entries = max_entries
    self._entries: collections.OrderedDict = collections.OrderedDict()
    self.hits = 0
    self.misses = 0

  def get_or_compute(self, key: Hashable, compute: Callable[[],
                                                            float]) -> float:
    """`compute()`'s result for `key`, computed on the first request only."""
    if key in self._entries:
      self.hits += 1
      self._entries.move_to_end(key)
      refused, value = self._entries[key]
      if refused:
        raise pld_epsilon.UnsupportedAccountingError(value)
      return value
    self.misses += 1
    try:
      value = compute()
    except pld_epsilon.UnsupportedAccountingError as e:
      self._store(key, (True, str(e)))
      raise
    self._store(key, (False, value))
    return value

  def _store(self, key: Hashable, entry: tuple) -> None:
    self._entries[key] = entry
    while len(self._entries) > self._max_entries:
      self._entries.popitem(last=False)

  def clear(self) -> None:
    self._entries.clear()
    self.hits = self.misses = 0

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

The composition the loop asks for next is known before the round that
precedes it runs (the ledger plus that round's event, plus the next round's
for its budget check), so `prefetch` computes it in one background thread
while the round trains (numpy's FFT releases the GIL), and a request for a
key still being computed waits for that computation instead of starting a
second one. Which thread computed an epsilon does not change its float: the
same function runs on the same arguments. Computations, foreground or
background, run one at a time (one lock), so that at most one PLD grid is
in memory. A background computation that fails for any other reason than a
refusal stores nothing: the request then computes it again in the caller's
thread and raises there, as without prefetching. Pure Python.
"""

import collections
from concurrent import futures
import queue
import threading
from typing import Callable, Hashable, Optional, Sequence

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
  """A bounded least-recently-used map from a key to an epsilon or refusal.

  Thread-safe; `prefetch` computes entries in a background daemon thread.
  """

  def __init__(self, max_entries: int = MAX_ENTRIES):
    self._max_entries = max_entries
    self._entries: collections.OrderedDict = collections.OrderedDict()
    # key -> Future of a background computation not yet finished.
    self._pending: dict[Hashable, futures.Future] = {}
    self._lock = threading.Lock()  # Guards the two maps and the counters.
    self._compute_lock = threading.Lock()  # One computation at a time.
    self._jobs: Optional[queue.SimpleQueue] = None
    self.hits = 0
    self.misses = 0
    self.prefetched = 0

  def get_or_compute(self, key: Hashable, compute: Callable[[],
                                                            float]) -> float:
    """`compute()`'s result for `key`, computed on the first request only."""
    with self._lock:
      pending = self._pending.get(key)
    if pending is not None:
      # Its exception, if any, is met again below (a refusal is an entry).
      futures.wait([pending])
    with self._lock:
      if key in self._entries:
        self.hits += 1
        self._entries.move_to_end(key)
        refused, value = self._entries[key]
        if refused:
          raise pld_epsilon.UnsupportedAccountingError(value)
        return value
      self.misses += 1
    return self._compute(key, compute)

  def prefetch(self, key: Hashable, compute: Callable[[], float]) -> None:
    """Starts computing `key` in the background unless known or under way."""
    with self._lock:
      if key in self._entries or key in self._pending:
        return
      future = futures.Future()
      self._pending[key] = future
      if self._jobs is None:
        self._jobs = queue.SimpleQueue()
        # A daemon: an interrupted run exits without waiting for it.
        threading.Thread(target=_serve,
                         args=(self._jobs,),
                         name='epsilon-prefetch',
                         daemon=True).start()
    self._jobs.put((future, key, lambda: self._prefetched(key, compute)))

  def _prefetched(self, key: Hashable, compute: Callable[[], float]) -> None:
    try:
      with self._lock:
        if key in self._entries:
          return
      self._compute(key, compute)
      with self._lock:
        self.prefetched += 1
    except pld_epsilon.UnsupportedAccountingError:
      pass  # Stored as a refusal.
    finally:
      with self._lock:
        self._pending.pop(key, None)

  def _compute(self, key: Hashable, compute: Callable[[], float]) -> float:
    with self._compute_lock:
      try:
        value = compute()
      except pld_epsilon.UnsupportedAccountingError as e:
        self._store(key, (True, str(e)))
        raise
      self._store(key, (False, value))
      return value

  def _store(self, key: Hashable, entry: tuple) -> None:
    with self._lock:
      self._entries[key] = entry
      while len(self._entries) > self._max_entries:
        self._entries.popitem(last=False)

  def wait(self) -> None:
    """Returns once every prefetch started so far has finished."""
    with self._lock:
      pending = list(self._pending.values())
    futures.wait(pending)

  def clear(self) -> None:
    self.wait()
    with self._lock:
      self._entries.clear()
      self.hits = self.misses = self.prefetched = 0


def _serve(jobs: queue.SimpleQueue) -> None:
  """The background thread: runs prefetches in order, forever."""
  while True:
    future, _, job = jobs.get()
    try:
      job()
    except BaseException as e:  # pylint: disable=broad-except
      # Nothing stored: the caller computes it again and raises itself.
      future.set_exception(e)
    else:
      future.set_result(None)

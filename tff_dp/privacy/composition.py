"""Composing a run's events: valid bounds, identical events grouped, RDP epsilon.

`tff_dp.privacy.accounting.compute_epsilon` composes a list of events in
three steps; this module holds the arithmetic of the first two and of the RDP
accountant (the PLD accountant's is `tff_dp.privacy.pld_epsilon`):

1. `valid_bounds`: the event lists whose epsilon each bounds that of the run.
   Under replace-one adjacency, a run with fixed-size sampling has a second
   one, bound (b) of `accounting`'s docstring: every sampling without
   replacement stripped (`without_replacement_stripped`). Why it holds: a
   round's output on D and on D' is the same mixture over the drawn index
   set, and for each index set the two cohorts are equal or replace-one
   neighbors, i.e. a pair the Gaussian mechanism dominates. The hockey-stick
   divergence is jointly convex (an f-divergence) and the Renyi divergence
   jointly quasi-convex (van Erven, Harremoes 2014, "Renyi divergence and
   Kullback-Leibler divergence", Sec. 5), so the mixture is no further apart
   than the Gaussian mechanism (the coupling argument of Balle, Barthe,
   Gaboardi 2018, "Privacy amplification by subsampling"). Dominating pairs
   compose adaptively (Zhu, Dong, Wang 2022, "Optimal accounting of
   differential privacy via characteristic function"), so R rounds are
   bounded by the R-fold Gaussian, which PLD computes exactly and RDP by
   adding its curve. Wang, Balle, Kasiviswanathan 2019's amplified bound (a)
   is loose when little is sampled away (small populations, large cohorts,
   few rounds): the smoke preset with fixed-size sampling (N = 40, n = 10,
   z = 0.5, 3 rounds, delta 1e-3) gets (a) 47.28 by RDP while (b) is 44.59
   exactly. Both are upper bounds on the same quantity, so their minimum is
   one too; the ledger keeps the events as they ran and the minimum is taken
   when they are composed. Only sampling WITHOUT replacement is stripped:
   with replacement one client can be drawn several times.
2. `group_events`: identical events merged into [(key, event, count)], so
   that composing costs O(distinct events), not O(rounds).
3. `rdp_epsilon`: RDP composes by adding the curves of the composed
   mechanisms (Mironov 2017, "Renyi differential privacy", Proposition 1), so
   each distinct event's curve is computed once by dp-accounting's
   `RdpAccountant` (cached), added `count` times, and converted to epsilon at
   `delta` by dp-accounting (Canonne, Kamath, Steinke 2020, "The discrete
   Gaussian for differential privacy", Proposition 12).
"""

import functools
import json
from typing import Sequence

import dp_accounting
from dp_accounting import dp_event
from dp_accounting import rdp
import numpy as np

from tff_dp import checks
from tff_dp.privacy import dp_event_json

NeighboringRelation = dp_accounting.NeighboringRelation

_RDP_ORDERS = rdp.RdpAccountant().orders


def valid_bounds(events: Sequence[dp_event.DpEvent],
                 relation: NeighboringRelation) -> list[list[dp_event.DpEvent]]:
  """Event lists whose epsilon each bounds that of `events` (module doc)."""
  bounds = [list(events)]
  if relation is NeighboringRelation.REPLACE_ONE:
    stripped = [without_replacement_stripped(e) for e in events]
    if stripped != bounds[0]:
      bounds.append(stripped)
  return bounds


def without_replacement_stripped(event: dp_event.DpEvent) -> dp_event.DpEvent:
  """`event` with each sampling without replacement replaced by its event.

  Bound (b) (module docstring): valid under replace-one adjacency only.
  """
  if isinstance(event, dp_event.SampledWithoutReplacementDpEvent):
    return without_replacement_stripped(event.event)
  if isinstance(event, dp_event.SelfComposedDpEvent):
    return dp_event.SelfComposedDpEvent(
        without_replacement_stripped(event.event), event.count)
  if isinstance(event, dp_event.ComposedDpEvent):
    return dp_event.ComposedDpEvent(
        [without_replacement_stripped(e) for e in event.events])
  return event


def group_events(events):
  """[(key, event, count)]: identical events merged, order of first sight."""
  groups = {}
  for event in events:
    count = 1
    # Unwrapping lets a ledger entry and a `SelfComposedDpEvent` of the same
    # round share one composition (and one cached RDP curve).
    while isinstance(event, dp_event.SelfComposedDpEvent):
      count *= checks.check_int('SelfComposedDpEvent count',
                                event.count,
                                minimum=1)
      event = event.event
    if not isinstance(event, dp_event.DpEvent):
      raise TypeError(f'Expected a DpEvent, got {event!r}.')
    key = dp_event_json.event_key(event)
    if key in groups:
      groups[key][2] += count
    else:
      groups[key] = [key, event, count]
  return list(groups.values())


def rdp_epsilon(groups, delta: float, relation: NeighboringRelation) -> float:
  """RDP epsilon at `delta` of `groups` [(key, event, count)] (module doc)."""
  total = sum(count * rdp_curve(key, relation) for key, _, count in groups)
  return float(rdp.compute_epsilon(_RDP_ORDERS, total, delta)[0])


@functools.lru_cache(maxsize=256)
def rdp_curve(key: str, relation: NeighboringRelation) -> np.ndarray:
  """ONE round's RDP curve of the event `key` names, at dp-accounting's orders.

  RDP composes by adding curves, so one round's curve times its count is
  exact. Cached (read-only): sampling without replacement costs ~0.3 s per
  curve, and the ledger is re-accounted before and after every round.
  """
  accountant = rdp.RdpAccountant(neighboring_relation=relation)
  accountant.compose(dp_event_json.event_from_json(json.loads(key)))
  curve = accountant.rdp
  curve.setflags(write=False)
  return curve

"""dp-accounting's epsilon for delta of a dense PLD, vectorized, to the bit.

`DensePLDPmf.get_epsilon_for_delta` (dp-accounting 0.4.3) walks the privacy
losses from the largest down, one Python iteration per grid point, until the
hockey-stick divergence (Koskela, Jalko, Honkela 2020, Eq. (5); the
`_get_epsilon_for_delta` of `pld_pmf`) reaches delta. The points above
epsilon are most of the composed grid, whose length grows linearly with the
number of composed rounds: after 1,500 rounds of the main job this walk was
the largest part of an epsilon's cost.

`epsilon_for_delta` returns the very same float. It performs the same
floating-point operations in the same order, only in numpy: the running
masses are sequential sums (`np.add.accumulate` adds left to right, one
element at a time, as the loop does; it is not the pairwise summation of
`np.sum`), the losses are the loop's repeated additions of -interval
(`itertools.count`), each exp(-loss) is `math.exp`'s (numpy's exp may differ
in the last bit), and the stopping test, whose log numpy may also round
differently, is found with a margin and then decided by `math.log` exactly
as the loop decides it. The walk goes in blocks, so that only the points the
loop would visit are computed, and at most a few hundred more
(`_block_ends`). `tests/privacy/test_pld_search.py` checks the equality
against dp-accounting on composed distributions.
"""

import math

import numpy as np

# Points per block of the sums that locate where the walk may stop.
_BLOCK = 4096
# Points of the walk's first block past that place; later ones double.
_BLOCK_AFTER = 256
# Margin of the vectorized stopping test: numpy's log and math.log differ by
# a few units in the last place, far below this.
_LOG_MARGIN = 1e-9


def epsilon_for_delta(infinity_mass: float, upper_loss: float,
                      discretization: float, probs: np.ndarray,
                      delta: float) -> float:
  """`pld_pmf._get_epsilon_for_delta` of a dense pmf, to the bit.

  Args:
    infinity_mass: The pmf's mass at infinite loss.
    upper_loss: The largest finite loss of the grid,
      (lower_loss + len(probs) - 1) * discretization, as dp-accounting
      computes it.
    discretization: The grid's interval.
    probs: The probabilities, from the smallest loss to the largest.
    delta: The target hockey-stick divergence.

  Returns:
    The smallest epsilon whose divergence is at most delta (math.inf if
    none), exactly as dp-accounting returns it.
  """
  if infinity_mass > delta:
    return math.inf
  reversed_probs = np.flip(np.asarray(probs, dtype=np.float64))
  mass_upper, mass_lower = infinity_mass, 0
  loss = upper_loss
  start = 0
  for end in _block_ends(reversed_probs, infinity_mass, delta):
    block = reversed_probs[start:end]
    # The losses of the block: the previous one plus -interval, each time.
    steps = np.full(len(block), -discretization)
    steps[0] = loss if start == 0 else loss - discretization
    losses = np.add.accumulate(steps)
    exps = np.fromiter(map(math.exp, (-losses).tolist()),
                       dtype=np.float64,
                       count=len(block))
    # Masses before each point of the block (as the loop tests them) and
    # after it.
    uppers = np.add.accumulate(np.concatenate([[mass_upper], block]))
    lowers = np.add.accumulate(np.concatenate([[mass_lower], exps * block]))
    stop = _first_stop(uppers[:-1], lowers[:-1], losses, delta)
    last = len(block) if stop is None else stop
    # The loop's other exit: all of the mass at losses too large for exp.
    flat = np.flatnonzero((uppers[1:last + 1] >= delta) &
                          (lowers[1:last + 1] == 0))
    if flat.size:
      return max(0, float(losses[flat[0]]))
    if stop is not None:
      return _final(float(uppers[stop]), float(lowers[stop]), delta)
    mass_upper, mass_lower = uppers[-1], lowers[-1]
    loss = float(losses[-1])
    start = end
  return _final(float(mass_upper), float(mass_lower), delta)


def _block_ends(reversed_probs: np.ndarray, infinity_mass: float, delta: float):
  """Yields where the walk's blocks end, the last at len(reversed_probs).

  Each point the loop visits needs its `math.exp`, the walk's main cost; a
  point past the stop does not. The loop cannot stop before its running
  upper mass reaches delta (both exits test it), which the sums alone,
  without any exp, locate: the first block ends just after that point, and
  the next ones grow from `_BLOCK_AFTER`, since the stop came 80-750 points
  later on the main job (benchmarks/README.md). Where the blocks end
  changes no result, only how many exps are computed past the stop.
  """
  size = len(reversed_probs)
  reach = _first_reaching(reversed_probs, infinity_mass, delta)
  end, step = reach + 1, _BLOCK_AFTER
  while end < size:
    yield end
    end, step = end + step, 2 * step
  yield size


def _first_reaching(values: np.ndarray, start: float, threshold: float) -> int:
  """First index where start + values[0] + ... (in order) >= threshold."""
  total = start
  for begin in range(0, len(values), _BLOCK):
    sums = np.add.accumulate(
        np.concatenate(([total], values[begin:begin + _BLOCK])))[1:]
    reached = np.flatnonzero(sums >= threshold)
    if reached.size:
      return begin + int(reached[0])
    total = sums[-1]
  return len(values)


def _first_stop(uppers, lowers, losses, delta):
  """The first index where the loop breaks, decided by `math.log`."""
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = (uppers - delta) / lowers
    maybe = (uppers > delta) & (lowers > 0) & (
        np.log(ratio) >= losses - _LOG_MARGIN * np.maximum(1.0, np.abs(losses)))
  for i in np.flatnonzero(maybe):
    upper, lower = float(uppers[i]), float(lowers[i])
    if math.log((upper - delta) / lower) >= float(losses[i]):
      return int(i)
  return None


def _final(mass_upper: float, mass_lower: float, delta: float) -> float:
  if mass_upper <= mass_lower + delta:
    return 0
  return math.log((mass_upper - delta) / mass_lower)

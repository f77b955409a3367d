"""Summary statistics of benchmark samples (pure Python, no numpy needed)."""

import math
from typing import Optional, Sequence


def percentile(values: Sequence[float], q: float) -> float:
  """The q-th percentile (0..100) with linear interpolation (numpy's default).

  Raises:
    ValueError: If `values` is empty or q is outside [0, 100].
  """
  if not values:
    raise ValueError('percentile of no values')
  if not 0.0 <= q <= 100.0:
    raise ValueError(f'q must be in [0, 100], got {q}')
  ordered = sorted(values)
  position = (len(ordered) - 1) * q / 100.0
  low = math.floor(position)
  high = math.ceil(position)
  return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(seconds: Sequence[float]) -> dict[str, float]:
  """Median, p10, p90, mean, min, max and count of per-round times."""
  return {
      'median': percentile(seconds, 50),
      'p10': percentile(seconds, 10),
      'p90': percentile(seconds, 90),
      'mean': sum(seconds) / len(seconds),
      'min': min(seconds),
      'max': max(seconds),
      'n': len(seconds),
  }


def least_squares_slope(xs: Sequence[float],
                        ys: Sequence[float]) -> Optional[float]:
  """Slope of the least-squares line through (xs, ys); None if undefined."""
  if len(xs) != len(ys):
    raise ValueError(f'{len(xs)} xs but {len(ys)} ys')
  n = len(xs)
  if n < 2:
    return None
  mean_x = sum(xs) / n
  mean_y = sum(ys) / n
  sxx = sum((x - mean_x)**2 for x in xs)
  if sxx == 0:
    return None
  sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys))
  return sxy / sxx


def second_half_slope(xs: Sequence[float],
                      ys: Sequence[float]) -> Optional[float]:
  """Least-squares slope over the second half of the samples (after warm-up)."""
  start = len(xs) // 2
  return least_squares_slope(xs[start:], ys[start:])


def ratio(numerator: Optional[float],
          denominator: Optional[float]) -> Optional[float]:
  """numerator / denominator; None if either is missing or the divisor is 0."""
  if numerator is None or denominator is None or denominator == 0:
    return None
  return numerator / denominator

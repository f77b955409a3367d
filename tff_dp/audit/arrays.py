"""Input checks shared by the audit modules: score arrays and probabilities.

Every public function of `tff_dp.audit` refuses bad input with a ValueError
that names the argument and shows its value (or its shape), like
`tff_dp.checks` does for scalars; this module holds the array half. Audit
statistics come from a finished run, so an empty or non-finite array is
always a bug upstream, never something to skip silently.
"""

import numpy as np

from tff_dp import checks


def finite_vector(name: str, values, *, min_size: int = 1) -> np.ndarray:
  """`values` as a 1-D float64 array of at least `min_size` finite numbers."""
  try:
    array = np.asarray(values, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f'{name} must be numbers, got {_show(values)}.') from e
  if array.ndim != 1:
    raise ValueError(f'{name} must be one-dimensional, got shape '
                     f'{array.shape}.')
  if array.size < min_size:
    raise ValueError(f'{name} must hold at least {min_size} value(s), got '
                     f'{array.size}.')
  bad = np.flatnonzero(~np.isfinite(array))
  if bad.size:
    raise ValueError(f'{name} must be finite, got {array[bad[0]]} at index '
                     f'{bad[0]}.')
  return array


def mask(name: str, values, *, size: int) -> np.ndarray:
  """`values` as a 1-D bool array of `size` entries (0/1 or bools only)."""
  array = np.asarray(values)
  if array.shape != (size,):
    raise ValueError(f'{name} must have shape ({size},), got {array.shape}.')
  if array.dtype != np.bool_:
    numeric = np.issubdtype(array.dtype, np.number)
    if not (numeric and np.isin(array, (0, 1)).all()):
      raise ValueError(f'{name} must be booleans (or 0/1), got '
                       f'{_show(values)}.')
    array = array.astype(bool)
  return array


def probability(name: str, value) -> float:
  """A probability strictly between 0 and 1 (delta, beta, a fraction)."""
  return checks.check_real(name, value, positive=True, below_one=True)


def _show(values) -> str:
  text = repr(values)
  return text if len(text) <= 80 else text[:77] + '...'

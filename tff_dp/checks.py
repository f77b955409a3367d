"""Argument checks shared by the library: integers, finite reals, `ConfigError`.

One definition, so that every public function refuses the same inputs with the
same message: `bool` (an int subclass; `True` clients per round is almost
surely a bug), NaN and infinities (which pass every `>=` comparison written
the other way round), with the argument's name and value in the message.
"""

import math
import numbers
from typing import Any


class ConfigError(ValueError):
  """A setting is invalid; the message names the flag and its value."""

  def __init__(self, flag: str, value: Any, reason: str):
    super().__init__(f'--{flag}={value}: {reason}')
    self.flag = flag
    self.value = value
    self.reason = reason


def check_int(name: str, value, *, minimum: int) -> int:
  """`value` as an int; TypeError unless an integer, ValueError if < minimum."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f'{name} must be an int, got {value!r} '
                    f'({type(value).__name__}).')
  if value < minimum:
    raise ValueError(f'{name} must be >= {minimum}, got {value}.')
  return int(value)


def check_real(name: str,
               value,
               *,
               positive: bool = False,
               below_one: bool = False) -> float:
  """`value` as a finite float >= 0 (> 0 if `positive`, < 1 if `below_one`)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    raise TypeError(f'{name} must be a real number, got {value!r}.')
  value = float(value)
  # Written as `not (...)` so that NaN, which compares False, is refused.
  ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
  if not ok or (below_one and not value < 1):
    bound = ' and < 1' if below_one else ''
    raise ValueError(f'{name} must be finite, {"> 0" if positive else ">= 0"}'
                     f'{bound}, got {value}.')
  return value

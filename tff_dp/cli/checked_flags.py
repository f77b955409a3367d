"""Range-checked absl flag definitions: integers, finite reals, enums.

The helpers with which `cli_flags` and `privacy_flags` define every flag of
the training program: each flag gets a validator at parse time, so a bad
value stops the program (absl reports "flag --name=value: reason") before
TensorFlow is even imported.

absl's own `lower_bound` lets NaN through (NaN compares False) and accepts
`inf`; every float flag of the training program is checked for finiteness
first.
"""

import math

from absl import flags

# Generous caps that catch typos (an extra zero or three) well before they turn
# into hours of compute or out-of-memory failures.
MAX_CLIENTS = 10_000_000
MAX_ROUNDS = 1_000_000
MAX_EPOCHS = 1000
MAX_BATCH = 1_000_000
MAX_UNITS = 100_000
MAX_RATE = 1e6


def _enum_values(enum_cls) -> list[str]:
  return [member.value for member in enum_cls]


def register(fv: flags.FlagValues, name: str, check, reason: str) -> None:
  """Registers `check` on flag `name`.

  absl reports a failure as "flag --name=value: reason".
  """
  flags.register_validator(name,
                           lambda v: v is None or check(v),
                           reason,
                           flag_values=fv)


def define_int(fv, name: str, default: int, help_text: str, *, lower: int,
               upper: int) -> None:
  flags.DEFINE_integer(name, default, help_text, flag_values=fv)
  register(fv, name, lambda v: lower <= v <= upper,
           f'must be an integer in [{lower}, {upper}]')


def define_float(fv,
                 name: str,
                 default: float,
                 help_text: str,
                 *,
                 lower: float,
                 upper: float,
                 lower_open: bool = False,
                 upper_open: bool = False) -> None:
  """Defines a float flag that must be finite and inside the given interval."""
  flags.DEFINE_float(name, default, help_text, flag_values=fv)
  left = '(' if lower_open else '['
  right = ')' if upper_open else ']'

  def check(v):
    if not math.isfinite(v):
      return False
    above = v > lower if lower_open else v >= lower
    below = v < upper if upper_open else v <= upper
    return above and below

  register(fv, name, check,
           f'must be a finite number in {left}{lower:g}, {upper:g}{right}')


def define_enum(fv, name: str, default: str, enum_cls, help_text: str) -> None:
  flags.DEFINE_enum(name,
                    default,
                    _enum_values(enum_cls),
                    help_text,
                    flag_values=fv)

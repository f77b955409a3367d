"""The central mechanisms `--dp_mechanism` can name, one row each.

A row is a `tff_dp.mechanisms.central.CentralMechanism`: its configuration
checks, statement words, ledger events, released values and aggregator.
`--dp_mechanism`'s values and help, the `DpMechanism` enum of the
configuration, the checks of `tff_dp.config_checks` and the release
allow-list are generated from the rows.

To add a mechanism: write it as one module in `tff_dp/mechanisms/` with a
`CentralMechanism` subclass and its instance `MECHANISM` (see
`gaussian_fixed.py`), then add one row to `MECHANISMS`.
"""

import enum
from typing import Iterator

from tff_dp.mechanisms import central
from tff_dp.mechanisms import gaussian_adaptive
from tff_dp.mechanisms import gaussian_fixed
from tff_dp.mechanisms import no_central_noise
from tff_dp.mechanisms import tree_aggregation

MECHANISMS: tuple[central.CentralMechanism, ...] = (
    gaussian_fixed.MECHANISM,
    gaussian_adaptive.MECHANISM,
    tree_aggregation.MECHANISM,
    no_central_noise.MECHANISM,
)

DpMechanism = enum.Enum('DpMechanism',
                        [(m.name.upper(), m.name) for m in MECHANISMS])
DpMechanism.__doc__ = 'How client updates are aggregated (one per row).'

_BY_NAME = {m.name: m for m in MECHANISMS}


def mechanism(member: DpMechanism) -> central.CentralMechanism:
  """The row of a `DpMechanism` member."""
  return _BY_NAME[DpMechanism(member).value]


def released_keys() -> Iterator[str]:
  """Every key some mechanism releases per round (for the allow-list)."""
  for row in MECHANISMS:
    yield from row.released_keys


def help_text() -> str:
  """`--dp_mechanism`'s help, one clause per row."""
  return 'Central DP on the aggregate. ' + '; '.join(
      f'{m.name}: {m.help}' for m in MECHANISMS) + '.'

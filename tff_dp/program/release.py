"""Everything a run releases per round goes through here, and only here.

In a DP run only values covered by the DP guarantee (or computed from public
data and the DP model) may leave the training loop. The allow-list below is the
single place that says which keys those are; `Releaser` refuses anything else.
Values computed from client data without noise are released only when the user
asks for them (`--release_nonprivate_metrics`), and always under the
`nonprivate/` prefix so that nobody mistakes them for private ones.

Rows that pass go to every sink of `tff_dp.program.sinks` (TensorBoard, whose
event times carry no timing information, and metrics.csv), each a TFF
release manager.
"""

import asyncio
from typing import Iterable, Mapping

from tff_dp.mechanisms import registry as mechanism_registry
from tff_dp.privacy import accounting
from tff_dp.program import canary_statistics
from tff_dp.program import sinks

NONPRIVATE_PREFIX = 'nonprivate/'

# Prefixes of the two evaluations (`--evaluation`): the server's held-out test
# set (public data, DP model: safe), and federated evaluation over held-out
# clients (their data, no noise: NOT covered by the guarantee).
EVAL_PREFIX = 'eval/'
FED_EVAL_PREFIX = NONPRIVATE_PREFIX + 'fed_eval/'
# The server's test set when it belongs to the private population
# (`tff_dp.data.test_sets`): its metrics are not covered either.
PRIVATE_EVAL_PREFIX = NONPRIVATE_PREFIX + 'eval/'
_EVAL_METRICS = ('loss', 'accuracy', 'precision', 'recall_at_5')

# Keys that are safe to release in a DP run.
DP_SAFE_KEYS = frozenset({
    # Server-side evaluation on a PUBLIC test set (`tff_dp.data.test_sets`)
    # of the DP model: accuracy, or for multi-label data
    # (`tff_dp.data.labels`) precision and recall@5.
    *(EVAL_PREFIX + name for name in _EVAL_METRICS),
    # Privacy accounting: functions of the mechanism's public parameters.
    *(accounting.released_key(kind) for kind in accounting.AccountantKind),
    # The central mechanism's per-round values (`tff_dp.mechanisms.registry`):
    # the noise multiplier and the clip, a flag (fixed clipping) or the
    # privately estimated quantile (adaptive clipping; its count query is
    # part of the noised mechanism).
    *mechanism_registry.released_keys(),
    # Local DP: the cumulative local epsilon of the worst-case client, with
    # participations counted so as not to reveal the hidden cohorts
    # (tff_dp.privacy.privacy_tracking).
    'privacy/local_epsilon',
    # Example-level DP-SGD: the worst silo's record-level epsilon, in runs
    # without a user-level claim (silo sizes public by assumption).
    'privacy/example_epsilon',
    # The planned (expected) cohort size, a public parameter.
    'cohort/expected_size',
    # An audit run's estimates and lower bound (`tff_dp.program.canary_audit`):
    # functions of the released models and of the auditor's own secrets.
    *canary_statistics.KEYS,
})

# Values computed from client data without noise; released only on request in
# DP runs (always in non-private runs).
NONPRIVATE_KEYS = frozenset({
    'nonprivate/train_loss',
    'nonprivate/train_accuracy',
    'nonprivate/train_precision',
    'nonprivate/train_recall_at_5',
    'nonprivate/train_examples',
    'nonprivate/cohort_size',
    # Wall time of the round: it grows with the cohort size, so it is a side
    # channel of the hidden cohorts.
    'nonprivate/round_seconds',
    # Depends on the silos' sizes; with a user-level claim, only on request.
    'nonprivate/example_epsilon',
    # Federated evaluation over the held-out clients
    # (`tff_dp.program.federated_evaluation`): their metrics, un-noised.
    FED_EVAL_PREFIX + 'num_examples',
    *(prefix + name
      for prefix in (FED_EVAL_PREFIX, PRIVATE_EVAL_PREFIX)
      for name in _EVAL_METRICS),
})

CSV_KEY_FIELD = sinks.CSV_KEY_FIELD
csv_path = sinks.csv_path
tensorboard_dir = sinks.tensorboard_dir


class ReleaseError(ValueError):
  """A value not on the allow-list was about to be released."""


def check_release_keys(keys: Iterable[str], *, private: bool,
                       allow_nonprivate: bool) -> None:
  """Raises `ReleaseError` unless every key may be released in this run.

  Args:
    keys: Names about to be released.
    private: Whether the run claims differential privacy.
    allow_nonprivate: Whether the user asked for non-private values.
  """
  allowed = set(DP_SAFE_KEYS)
  if allow_nonprivate or not private:
    allowed |= NONPRIVATE_KEYS
  refused = sorted(set(keys) - allowed)
  if refused:
    raise ReleaseError(
        f'refusing to release {refused}: not on the release allow-list of a '
        f'{"DP" if private else "non-private"} run')


class Releaser:
  """Writes per-round rows to every sink, enforcing the allow-list first."""

  def __init__(self, run_dir: str, *, private: bool, allow_nonprivate: bool):
    self._private = private
    self._allow_nonprivate = allow_nonprivate
    self._sinks = [sink.build(run_dir) for sink in sinks.SINKS]
    # Every key released so far (replayed rows included): what the privacy
    # statement lists as released.
    self.released_keys: set[str] = set()

  def release(self, round_num: int, values: Mapping[str, float]) -> None:
    """Releases one round's values (after checking every key)."""
    check_release_keys(values.keys(),
                       private=self._private,
                       allow_nonprivate=self._allow_nonprivate)
    self.released_keys.update(values)
    row = {key: float(value) for key, value in values.items()}
    for sink in self._sinks:
      asyncio.run(sink.release(row, key=round_num))

  def replay(self, rows: Iterable[Mapping[str, str]]) -> None:
    """Rebuilds the sinks that keep their own files from metrics.csv's rows."""
    rows = list(rows)
    for row in rows:
      self.released_keys.update(
          key for key, value in row.items()
          if key != CSV_KEY_FIELD and value not in ('', None))
    for sink in self._sinks:
      if hasattr(sink, 'replay'):
        sink.replay(rows)

  def write_text(self,
                 tag: str,
                 text: str,
                 *,
                 step: int = 0,
                 verbatim: bool = False) -> None:
    """Writes run-level text where sinks show it: prose (the privacy
    statement), or `verbatim` line by line (the flags)."""
    for sink in self._sinks:
      if hasattr(sink, 'write_text'):
        sink.write_text(tag, text, step=step, verbatim=verbatim)

  def describe_run(self, description) -> None:
    """Gives the run's public description (settings, chart layout:
    `tff_dp.program.tensorboard_layout.RunDescription`) to the sinks that
    show one."""
    for sink in self._sinks:
      if hasattr(sink, 'describe_run'):
        sink.describe_run(description)

  def close(self) -> None:
    for sink in self._sinks:
      if hasattr(sink, 'close'):
        sink.close()

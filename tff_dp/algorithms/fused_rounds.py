"""TEMPORARY naive stand-in (lead's integration testing only; not committed)."""
import tensorflow_federated as tff

from tff_dp.algorithms import grouped_data


class FusedRounds:

  def __init__(self, process):
    self._process = process
    self._fns = {}

  def _fn(self, k):
    if k not in self._fns:
      proc = self._process
      state_type, groups_type = proc.next.type_signature.parameter

      @tff.federated_computation(state_type, [groups_type] * k)
      def fused(state, groups_list):
        metrics = []
        for i in range(k):
          out = proc.next(state, groups_list[i])
          state = out.state
          metrics.append(out.metrics)
        return state, metrics

      self._fns[k] = fused
    return self._fns[k]

  def run(self, state, round_groups):
    most = max(len(g) for g in round_groups)
    padded = [
        list(g) + [grouped_data.empty_group()] * (most - len(g))
        for g in round_groups
    ]
    state, metrics = self._fn(len(round_groups))(state, padded)
    return state, [
        tff.learning.templates.LearningProcessOutput(None, m) for m in metrics
    ]

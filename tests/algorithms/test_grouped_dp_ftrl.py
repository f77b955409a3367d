"""DP-FTRL on the grouped path against `tff_dp.algorithms.dp_ftrl`'s process.

DP-FTRL is TFF's FedAvg with the tree-aggregation query (restarted every
epoch) and heavy-ball SGD at the server; the grouped path runs the same
query (`tff_dp.mechanisms.dp_queries.build_tree_aggregator`), one clipped
record per simulated client, the tree's noise once per round. At zero noise
both give the same model over three rounds (a restart after round 2) and the
same tree state (checked by `dp_ftrl.check_tree_alignment`); with noise, the
first round's step is the first leaf's noise z C / n (flake rate ~2e-9, see
`tests.helpers.grouped.assert_std`).
"""

import functools

import numpy as np
import pytest

from tests.helpers import grouped as g
from tff_dp.algorithms import dp_ftrl
from tff_dp.algorithms import grouped_fedavg
from tff_dp.mechanisms import dp_queries

pytestmark = pytest.mark.tff

_ROUNDS_PER_EPOCH = 2


def _tree(*,
          noise_multiplier=0.0,
          clip=0.05,
          clients_per_round=7,
          input_dim=g.D,
          hidden=g.HIDDEN):
  return dp_queries.build_tree_aggregator(
      noise_multiplier=noise_multiplier,
      clip=clip,
      clients_per_round=clients_per_round,
      rounds_per_epoch=_ROUNDS_PER_EPOCH,
      record_specs=dp_ftrl.model_update_specs(g.model_fn(input_dim, hidden)))


@functools.lru_cache(maxsize=None)
def _grouped(*,
             noise_multiplier=0.0,
             clip=0.05,
             clients_per_round=7,
             input_dim=g.D,
             hidden=g.HIDDEN,
             client_lr=g.CLIENT_LR,
             server_momentum=0.9,
             max_client_size=None):
  return grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=g.keras_model_fn(input_dim, hidden),
      input_dim=input_dim,
      num_classes=g.C,
      dp_factory=_tree(noise_multiplier=noise_multiplier,
                       clip=clip,
                       clients_per_round=clients_per_round,
                       input_dim=input_dim,
                       hidden=hidden),
      client_learning_rate=client_lr,
      client_momentum=0.0,
      server_optimizer=dp_ftrl.build_server_optimizer(
          server_learning_rate=1.0, server_momentum=server_momentum),
      batch_size=g.BATCH_SIZE,
      epochs=g.EPOCHS,
      max_client_size=max_client_size)


@g.PATHS
def test_zero_noise_grouped_dp_ftrl_equals_reference(tff_runtime, monkeypatch,
                                                     max_client_size):
  del tff_runtime
  xs, ys = g.population()
  reference = dp_ftrl.build_dp_ftrl_process(model_fn=g.model_fn(),
                                            client_learning_rate=g.CLIENT_LR,
                                            server_learning_rate=1.0,
                                            server_momentum=0.9,
                                            model_aggregator=_tree())
  traced = g.count_vectorized(monkeypatch)
  grouped = _grouped(max_client_size=max_client_size)
  g.assert_path(traced, max_client_size)
  ref_state, _ = g.assert_equivalent(reference, grouped, xs, ys)
  # The restart counter and the tree's leaves are in the (same) state.
  dp_ftrl.check_tree_alignment(ref_state,
                               rounds_completed=len(g.COHORTS),
                               rounds_per_epoch=_ROUNDS_PER_EPOCH)
  state, _ = g.run(grouped, lambda r, c: g.groups(xs, ys, r, c, group_size=3))
  dp_ftrl.check_tree_alignment(state,
                               rounds_completed=len(g.COHORTS),
                               rounds_per_epoch=_ROUNDS_PER_EPOCH)


def test_grouped_dp_ftrl_noise_std(tff_runtime):
  del tff_runtime
  z, n, clip, input_dim = 1.0, 40, 0.5, 784
  # Zero client learning rate: every update is zero, so round 1's step (lr 1,
  # no momentum) is minus the first leaf's noise divided by n.
  process = _grouped(noise_multiplier=z,
                     clip=clip,
                     clients_per_round=n,
                     input_dim=input_dim,
                     hidden=128,
                     client_lr=0.0,
                     server_momentum=0.0)
  steps = g.zero_update_steps(process, input_dim=input_dim)
  assert steps[0].size >= 100_000
  g.assert_std(steps[0], z * clip / n)
  assert not np.allclose(steps[0][:1000], steps[1][:1000])

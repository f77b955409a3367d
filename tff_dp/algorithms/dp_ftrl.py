"""DP-FTRL: federated averaging with tree-aggregation noise, restarted by epoch.

Implements DP-FTRL and its momentum variant DP-FTRLM from Kairouz, McMahan,
Song, Thakkar, Thakurta, Xu 2021, "Practical and Private (Deep) Learning
without Sampling or Shuffling" (ICML), in its federated form
(google-research/federated `dp_ftrl/`): clients train locally and send their
update u = w_start - w_end (TFF's convention: a pseudo-gradient, the negated
model delta); each u is clipped to L2 norm C; the server releases noisy
PREFIX SUMS of the clipped updates through the tree aggregation protocol
(Dwork, Naor, Pitassi, Rothblum 2010; by default with Honaker 2015's
"efficient" estimator), and follows the regularized leader:

    w_t = w_0 - lr * m_t,   m_t = momentum * m_{t-1} + G_t,
    G_t = (noisy prefix sum of the clipped updates of rounds 1..t) / n,

with n = `clients_per_round` fixed (never the actual count: dividing by it
would release it). With momentum = 0 this is w_t = w_0 - lr * G_t.

How it is built (TFF 0.87 / TF Privacy 0.9):

* Aggregator: the query of `tff.aggregators.DifferentiallyPrivateFactory
  .tree_aggregation`, i.e. `tfp.TreeResidualSumQuery` inside a
  `tfp.NormalizedQuery(denominator=clients_per_round)`, additionally wrapped
  in a `tfp.RestartQuery` with `PeriodicRoundRestartIndicator(period=
  rounds_per_epoch)` (as TFF's own `tree_adaptive` does; ours,
  `tff_dp.mechanisms.epoch_tree.EpochTreeQuery`, skips the draws TF
  Privacy's restart discards). The factory method itself offers no restart,
  hence `tff_dp.mechanisms.dp_queries.build_tree_aggregator`.
  `TreeResidualSumQuery` does NOT return the noisy prefix sum but the
  RESIDUAL g_t = G_t - G_{t-1} (round t's clipped mean plus the change of
  the tree's cumulative noise).
* Server update: TFF's heavy-ball SGD, v_t = momentum * v_{t-1} + g_t,
  w_t = w_{t-1} - lr * v_t, on the residuals. Summing, w_t = w_0 - lr *
  sum_{s<=t} v_s, and sum_{s<=t} v_s = sum_{k<=t} g_k (1 - momentum^{t-k+1})
  / (1 - momentum) = sum_{s<=t} momentum^{t-s} G_s = m_t above: on
  residuals, SGD(M) IS FTRL(M) on the noisy prefix sums (tested against a
  numpy FTRLM). SGD on the prefix sums themselves would be wrong (it would
  apply round 1's update t times); nothing here does that.
* Restart: after every `rounds_per_epoch` calls of `next` (after the last
  round of each epoch of `tff_dp.cohorts.epoch_sampling.EpochSampler`) the query
  starts a fresh tree (new noise: the stateless seed counter continues, so
  noise never repeats) and sets `previous_tree_noise = 0`. The next residual
  is then (round sum + the new tree's first noise): the model keeps each
  completed tree's final noisy total and adds the new tree's prefix sums,
  i.e. FTRL continued over restarted trees, as in TF Privacy's
  `DPFTRLTreeAggregationOptimizer(restart_period=...)`. The momentum buffer
  is NOT reset at a restart (post-processing, no privacy effect; the older
  google-research `DPFTRLMServerOptimizer.restart_dp_tree` also reset w_0
  and the momentum).

The restart counter lives in the aggregator state, so it is checkpointed with
the process state; `check_tree_alignment` verifies that the tree and the
sampler agree on the round (call `next` exactly once per 1-based round, from
round 1). Each client may contribute at most once per tree: use
`EpochSampler` with the same `rounds_per_epoch`. Accounting:
`tff_dp.cohorts.epoch_sampling.tree_round_event` (one tree event per epoch,
`REPLACE_SPECIAL`, RDP only).
"""

from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp import checks
from tff_dp.algorithms import learning_process


def model_update_specs(
    model_fn: Callable[[], tff.learning.models.VariableModel]
) -> list[tf.TensorSpec]:
  """TensorSpecs of the model's trainable weights (a client update's shape)."""
  with tf.Graph().as_default():
    model = model_fn()
    return [tf.TensorSpec(v.shape, v.dtype) for v in model.trainable_variables]


def build_dp_ftrl_process(
    *,
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_learning_rate: float,
    server_learning_rate: float,
    server_momentum: float,
    model_aggregator: tff.aggregators.UnweightedAggregationFactory,
    client_momentum: float = 0.0,
    frozen_weights: Optional[Sequence[Any]] = None,
) -> tff.learning.templates.LearningProcess:
  """Returns DP-FTRL(M) as a TFF learning process (see module doc).

  Args:
    model_fn: No-argument constructor of the TFF model.
    client_learning_rate: Learning rate of the clients' SGD.
    server_learning_rate: FTRL learning rate (lr above).
    server_momentum: FTRLM momentum in [0, 1); 0 is plain DP-FTRL.
    model_aggregator: The tree (`tff_dp.mechanisms.dp_queries.
      build_tree_aggregator`, as `tff_dp.mechanisms.tree_aggregation` builds
      it), restarted every `EpochSampler.rounds_per_epoch` rounds.
    client_momentum: Momentum of the clients' SGD.
    frozen_weights: The frozen weights if not the model's initial ones
      (`--init_from`). A model with frozen weights gets them as constants of
      the client computation, broadcasting the trainable tensors only
      (`learning_process.with_frozen_constants`).

  Returns:
    The process. Its `next` must be called exactly once per round, from
    round 1, with the cohorts of an `EpochSampler` (see
    `check_tree_alignment`). Like TFF's DP-FedAvg, its metrics include
    client training metrics summed WITHOUT noise: do not release them as
    private.
  """
  checks.check_real('client_learning_rate', client_learning_rate)
  checks.check_real('client_momentum', client_momentum, below_one=True)
  return learning_process.with_frozen_constants(
      lambda **distributor: tff.learning.algorithms.build_unweighted_fed_avg(
          model_fn=model_fn,
          client_optimizer_fn=tff.learning.optimizers.build_sgdm(
              learning_rate=client_learning_rate,
              momentum=client_momentum or None),
          server_optimizer_fn=build_server_optimizer(
              server_learning_rate=server_learning_rate,
              server_momentum=server_momentum),
          loop_implementation=learning_process.LOOP,
          model_aggregator=model_aggregator,
          **distributor), model_fn, frozen_weights)


def build_server_optimizer(
    *, server_learning_rate: float,
    server_momentum: float) -> tff.learning.optimizers.Optimizer:
  """DP-FTRL(M)'s server optimizer (the grouped path uses it too).

  Heavy-ball SGD on the tree's residuals is FTRL(M) on its prefix sums (see
  the module docstring).
  """
  momentum = checks.check_real('server_momentum',
                               server_momentum,
                               below_one=True)
  checks.check_real('server_learning_rate', server_learning_rate, positive=True)
  return tff.learning.optimizers.build_sgdm(learning_rate=server_learning_rate,
                                            momentum=momentum or None)


def _tree_query_state(state: Any) -> Any:
  # LearningAlgorithmState.aggregator is a DPAggregatorState whose query state
  # nests NormalizedQuery -> RestartQuery (EpochTreeQuery) ->
  # TreeResidualSumQuery.
  return state.aggregator.query_state.numerator_state


def tree_rounds_completed(state: Any) -> int:
  """Number of `next` calls the tree's restart counter has seen.

  Equals the number of completed rounds if the process was called once per
  round from round 1. The counter is part of the state, so it survives a
  checkpoint; compare it with the loop's round number after a resume.

  Args:
    state: A state of a process built by `build_dp_ftrl_process`.
  """
  return int(_tree_query_state(state).indicator_state)


def tree_leaf_index(state: Any) -> int:
  """Leaves already in the current tree: 0 right after a restart.

  Decoded from TF Privacy's `TreeState.level_buffer_idx` (the levels of the
  stored left children; the leaf count is sum(2**level) - 1, cf.
  `tfp.tree_aggregation.get_step_idx`).

  Args:
    state: A state of a process built by `build_dp_ftrl_process`.
  """
  levels = np.asarray(
      _tree_query_state(state).inner_query_state.tree_state.level_buffer_idx)
  return int(np.sum(2**levels.astype(np.int64))) - 1


def check_tree_alignment(state: Any, *, rounds_completed: int,
                         rounds_per_epoch: int) -> None:
  """Raises ValueError unless the tree is where the sampler's epochs say.

  The restarts make the per-epoch accounting valid only if they coincide
  with the epoch boundaries of `EpochSampler`; a process state restored from
  another run, or a loop that skipped or repeated `next`, would break that.

  Args:
    state: A state of a process built by `build_dp_ftrl_process`.
    rounds_completed: Rounds the loop has completed (1-based rounds 1..this).
    rounds_per_epoch: The sampler's `rounds_per_epoch`.
  """
  seen = tree_rounds_completed(state)
  leaf = tree_leaf_index(state)
  if seen != rounds_completed or leaf != rounds_completed % rounds_per_epoch:
    raise ValueError(
        f'DP-FTRL tree out of step with the epochs: the tree has seen {seen} '
        f'rounds and holds {leaf} leaves, but {rounds_completed} rounds were '
        f'completed with {rounds_per_epoch} rounds per epoch (expected '
        f'{rounds_completed} and {rounds_completed % rounds_per_epoch}).')

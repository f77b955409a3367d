"""Example-level (record-level) DP-SGD inside each client, for cross-silo FL.

Each silo (a hospital, a bank) protects each of ITS records with DP-SGD of
Abadi et al. 2016, "Deep Learning with Differential Privacy" (CCS), Algorithm
1, in the Poisson-sampled form that its moments accountant and dp-accounting's
`PoissonSampledDpEvent` analyze (Mironov, Talwar, Zhang 2019, "Renyi
Differential Privacy of the Sampled Gaussian Mechanism"). Each of the
`local_steps` local steps of a round:

1. samples a batch by Poisson sampling: every example of the silo's n_k
   examples joins independently with probability q_k = min(1, B / n_k), B the
   expected batch size (shuffled fixed-size batches would NOT match the
   accounting);
2. computes per-example gradients, vectorized (`tf.vectorized_map` over the
   loss of ONE example, so no example can influence another's gradient);
3. clips each example's gradient to global L2 norm C across all trainable
   tensors together (an example whose norm is not finite contributes zero);
4. sums, adds Gaussian noise N(0, (sigma C)^2) per coordinate, divides by B
   (never by the actual batch size, which depends on the data), and takes an
   SGD step.

The client returns the model delta (initial - trained weights, TFF's sign) with
weight 1, like `tff.learning.templates.build_model_delta_client_work` with
uniform weighting, so it composes with any unweighted aggregator, including
TF Privacy's `DifferentiallyPrivateFactory` for user-level central DP on top.

Randomness: batch sampling and noise use stateless Philox ops whose seed is
fresh once per client per round, keyed by 128 bits from the operating system
(`tff_dp.mechanisms.noise_seeds`), and folded with the step index, so they are secret
and fresh per client, round and step whatever graph- or op-level seeds TFF
serializes into its computations. Philox is a statistical generator, not a
cryptographic one: fine for simulation; a device in a deployment should use
a cryptographically secure source.

Assumption shared with Opacus and TF Privacy: the silo's size n_k is public
(q_k is computed from it). See `tff_dp.privacy.example_accounting` for the epsilon.
"""

import collections
import dataclasses
from typing import Any, Callable, Mapping, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp import checks
from tff_dp.mechanisms import float64_noise
from tff_dp.mechanisms import noise_seeds
from tff_dp.privacy import run_secrets

ModelFn = Callable[[], tff.learning.models.VariableModel]
LossFn = Callable[[], Callable[[Any, Any], tf.Tensor]]

_MAX_EXAMPLES = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class DpSgdSettings:
  """Validated parameters of the clients' DP-SGD."""
  learning_rate: float
  noise_multiplier: float
  clip: float
  expected_batch_size: int
  local_steps: int

  def __post_init__(self):
    # `check_real` refuses NaN and infinities, which would pass `>=` checks.
    check = checks.check_real
    object.__setattr__(self, 'learning_rate',
                       check('learning_rate', self.learning_rate))
    object.__setattr__(self, 'noise_multiplier',
                       check('noise_multiplier', self.noise_multiplier))
    object.__setattr__(self, 'clip', check('clip', self.clip, positive=True))
    object.__setattr__(
        self, 'expected_batch_size',
        checks.check_int('expected_batch_size',
                         self.expected_batch_size,
                         minimum=1))
    object.__setattr__(
        self, 'local_steps',
        checks.check_int('local_steps', self.local_steps, minimum=1))


# --- Building blocks (plain TensorFlow; tested eagerly). ---------------------


def sampling_rate(num_examples: tf.Tensor,
                  expected_batch_size: int) -> tf.Tensor:
  """q = min(1, B / n) in float64 (n = 0 gives 1: there is nothing to sample).

  float64 because a float32 uniform has a 2^-24 grid, which would make the
  realized rate differ from the accounted q by up to 2^-24 / q relatively.
  """
  n = tf.cast(num_examples, tf.float64)
  return tf.minimum(tf.constant(1.0, tf.float64),
                    tf.constant(float(expected_batch_size), tf.float64) / n)


def poisson_sample_indices(*, num_examples: tf.Tensor, rate: tf.Tensor,
                           seed: tf.Tensor) -> tf.Tensor:
  """Indices of a Poisson sample: each of `num_examples` kept w.p. `rate`."""
  u = tf.random.stateless_uniform([num_examples], seed=seed, dtype=tf.float64)
  return tf.where(u < rate)[:, 0]


def clipped_gradient_sum(per_example_grads: list[tf.Tensor],
                         clip: float) -> list[tf.Tensor]:
  """Sum over examples of gradients clipped to global L2 norm `clip`.

  Args:
    per_example_grads: One tensor per trainable variable, each with a leading
      example axis of the same length b (b may be 0).
    clip: The L2 bound C on each example's concatenated gradient.

  Returns:
    One tensor per variable (without the example axis). An example whose norm
    is NaN or infinite contributes zero: `clip_by_global_norm` would turn an
    infinite norm into NaNs, and `norm > C` is False for NaN.
  """
  squares = [
      tf.reduce_sum(tf.square(g), axis=list(range(1, g.shape.rank)))
      for g in per_example_grads
  ]
  norms = tf.sqrt(tf.add_n(squares))  # [b]
  # Only the finite examples are summed: a zero weight would not remove the
  # others (0 * inf is NaN).
  kept = tf.where(tf.math.is_finite(norms))[:, 0]
  # C / max(norm, C) = min(1, C / norm), and no division by a zero norm.
  scale = tf.gather(clip / tf.maximum(norms, clip), kept)
  # The weighted sum as one contraction over the examples: scaling every
  # example's gradient first, then summing, passes over the [b, ...]
  # gradients about twice as often (the CNN's 16 x 1.2M: 24 ms against
  # 12 ms per step, in process, load ~3).
  return [
      tf.tensordot(tf.cast(scale, g.dtype), tf.gather(g, kept), axes=1)
      for g in per_example_grads
  ]


def _features_and_labels(batch):
  # Same convention as `tff.learning.models.from_keras_model`.
  if isinstance(batch, Mapping):
    return batch['x'], batch['y']
  return batch[0], batch[1]


def _zero_if_any_non_finite(tensors):
  finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in tensors])
  return [tf.where(finite, t, tf.zeros_like(t)) for t in tensors]


def _empty_like_spec(spec: tf.TensorSpec) -> tf.Tensor:
  if not spec.shape[1:].is_fully_defined():
    raise ValueError(f'Example-level DP-SGD needs fully defined non-batch '
                     f'dimensions in the model input spec, got {spec}.')
  return tf.zeros([0] + spec.shape[1:].as_list(), spec.dtype)


def _build_client_update(model: tff.learning.models.VariableModel,
                         loss: Callable[[Any, Any], tf.Tensor],
                         settings: DpSgdSettings, noise_key: tuple[int, int]):
  """Returns the tf.function running one client's local DP-SGD.

  `noise_key` (`tff_dp.privacy.run_secrets.new_noise_key`) keys the batch sampling
  and the noise (module docstring).
  """
  variables = list(model.trainable_variables)
  empty_data = tf.nest.map_structure(_empty_like_spec, model.input_spec)
  noise_std = settings.noise_multiplier * settings.clip
  scale = settings.learning_rate / settings.expected_batch_size

  def per_example_gradients(x, y):

    def one_example(example):
      xi, yi = tf.nest.map_structure(lambda t: t[tf.newaxis], example)
      with tf.GradientTape() as tape:
        predictions = model.predict_on_batch(xi, training=True)
        # The loss of a batch of one: whatever the reduction, one example.
        value = tf.reduce_sum(loss(yi, predictions))
      return tape.gradient(value,
                           variables,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)

    return tf.vectorized_map(one_example, (x, y))

  @tf.function
  def client_update(initial_weights, dataset):
    weights = tff.learning.models.ModelWeights.from_model(model)
    tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
    # The silo's examples, in memory: Poisson sampling flips a coin for every
    # example at every step, so each step touches all n_k of them anyway.
    # One batch of everything first: concatenating the client's own batches
    # one by one inside `reduce` would copy O(n^2) bytes.
    data = dataset.unbatch().batch(_MAX_EXAMPLES).reduce(
        empty_data, lambda s, b: tf.nest.map_structure(
            lambda u, v: tf.concat([u, v], 0), s, b))
    num_examples = tf.shape(tf.nest.flatten(data)[0])[0]
    rate = sampling_rate(num_examples, settings.expected_batch_size)
    client_seed = noise_seeds.execution_seed(noise_key)
    for step in tf.range(settings.local_steps):
      seeds = tf.random.experimental.stateless_split(
          tf.random.experimental.stateless_fold_in(client_seed, step),
          num=1 + len(variables))
      indices = poisson_sample_indices(num_examples=num_examples,
                                       rate=rate,
                                       seed=seeds[0])
      batch = tf.nest.map_structure(lambda t: tf.gather(t, indices), data)
      # Only for the (non-private) training metrics TFF aggregates.
      model.forward_pass(batch, training=True)
      grads = clipped_gradient_sum(
          per_example_gradients(*_features_and_labels(batch)), settings.clip)
      for i, (variable, grad) in enumerate(zip(variables, grads)):
        noise = float64_noise.gaussian_as(tf.shape(variable), seeds[i + 1],
                                          noise_std, variable.dtype)
        variable.assign_sub(scale * (grad + noise))
    delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable,
                                  weights.trainable)
    # A function of the private trajectory: zeroing costs no privacy.
    delta = tf.nest.pack_sequence_as(
        delta, _zero_if_any_non_finite(tf.nest.flatten(delta)))
    return (tff.learning.templates.ClientResult(update=delta,
                                                update_weight=tf.constant(
                                                    1.0, tf.float32)),
            model.report_local_unfinalized_metrics())

  return client_update


# --- TFF processes. ----------------------------------------------------------


def build_example_dp_client_work(
    *,
    model_fn: ModelFn,
    loss_fn: LossFn,
    learning_rate: float,
    noise_multiplier: float,
    clip: float,
    expected_batch_size: int,
    local_steps: int,
    metrics_aggregator: Optional[Callable[..., Any]] = None,
) -> tff.learning.templates.ClientWorkProcess:
  """A `ClientWorkProcess` whose local training is Poisson-sampled DP-SGD.

  Args:
    model_fn: No-argument constructor of a `tff.learning.models.VariableModel`
      (e.g. `tff_dp.algorithms.models.build_model_fn(...)`); its `predict_on_batch` is
      differentiated per example, its `forward_pass` only feeds the metrics.
    loss_fn: No-argument constructor of the training loss, called as
      `loss(labels, predictions)` on a batch of ONE example (e.g.
      `tff_dp.algorithms.models.loss_fn`). Any reduction works on one example.
    learning_rate: The clients' SGD learning rate.
    noise_multiplier: sigma: noise std per coordinate / clip, per step.
    clip: C, the L2 bound on each example's gradient (all tensors together).
    expected_batch_size: B; q_k = min(1, B / n_k) and the noised sum is
      divided by B.
    local_steps: DP-SGD steps per round, fixed and independent of the data.
    metrics_aggregator: As in TFF; default `tff.learning.metrics.
      sum_then_finalize`. The training metrics are NOT private.

  Returns:
    A process with empty state; `next` returns per-client
    `ClientResult(update=model delta, update_weight=1.0)`.
  """
  settings = DpSgdSettings(learning_rate=learning_rate,
                           noise_multiplier=noise_multiplier,
                           clip=clip,
                           expected_batch_size=expected_batch_size,
                           local_steps=local_steps)
  noise_key = run_secrets.new_noise_key()
  if metrics_aggregator is None:
    metrics_aggregator = tff.learning.metrics.sum_then_finalize
  with tf.Graph().as_default():
    # As TFF does: keep the probe model's variables out of the global graph.
    model = model_fn()
    metrics_aggregation_fn = metrics_aggregator(model.metric_finalizers())
    tf.nest.map_structure(_empty_like_spec, model.input_spec)
  data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
  weights_type = tff.learning.models.weights_type_from_model(model)

  @tff.federated_computation
  def init_fn():
    return tff.federated_value((), tff.SERVER)

  @tff.tensorflow.computation(weights_type, data_type)
  def client_update_computation(initial_weights, dataset):
    client_update = _build_client_update(model_fn(), loss_fn(), settings,
                                         noise_key)
    return client_update(initial_weights, dataset)

  @tff.federated_computation(init_fn.type_signature.result,
                             tff.FederatedType(weights_type, tff.CLIENTS),
                             tff.FederatedType(data_type, tff.CLIENTS))
  def next_fn(state, weights, client_data):
    client_result, model_outputs = tff.federated_map(client_update_computation,
                                                     (weights, client_data))
    measurements = tff.federated_zip(
        collections.OrderedDict(train=metrics_aggregation_fn(model_outputs)))
    return tff.templates.MeasuredProcessOutput(state, client_result,
                                               measurements)

  return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


class FixedDenominatorMeanFactory(tff.aggregators.UnweightedAggregationFactory):
  """Sum of client values divided by a FIXED number (the planned cohort).

  Dividing by the number of clients that reported would make the scale of the
  update depend on who participated; a fixed denominator keeps it public and
  matches `DifferentiallyPrivateFactory`, so the two defaults agree.
  """

  def __init__(self, denominator: int):
    self._denominator = checks.check_int('denominator', denominator, minimum=1)

  def create(self, value_type) -> tff.templates.AggregationProcess:
    sum_process = tff.aggregators.SumFactory().create(value_type)
    denominator = self._denominator

    @tff.tensorflow.computation(value_type)
    def divide(total):
      return tf.nest.map_structure(lambda t: t / tf.cast(denominator, t.dtype),
                                   total)

    @tff.federated_computation
    def init_fn():
      return sum_process.initialize()

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      output = sum_process.next(state, value)
      return tff.templates.MeasuredProcessOutput(
          output.state, tff.federated_map(divide, output.result),
          output.measurements)

    return tff.templates.AggregationProcess(init_fn, next_fn)


def build_example_dp_fed_avg(
    *,
    model_fn: ModelFn,
    loss_fn: LossFn,
    client_learning_rate: float,
    server_optimizer: tff.learning.optimizers.Optimizer,
    noise_multiplier: float,
    clip: float,
    expected_batch_size: int,
    local_steps: int,
    model_aggregator: Optional[
        tff.aggregators.UnweightedAggregationFactory] = None,
    clients_per_round: Optional[int] = None,
    metrics_aggregator: Optional[Callable[..., Any]] = None,
) -> tff.learning.templates.LearningProcess:
  """FedAvg whose clients run example-level DP-SGD (see module doc).

  Args:
    model_fn: As in `build_example_dp_client_work`.
    loss_fn: As in `build_example_dp_client_work`.
    client_learning_rate: The clients' SGD learning rate.
    server_optimizer: Applied by the server to the aggregated delta.
    noise_multiplier: sigma of the clients' DP-SGD.
    clip: Per-example L2 clip C.
    expected_batch_size: B (see `build_example_dp_client_work`).
    local_steps: DP-SGD steps per client per round.
    model_aggregator: An unweighted factory, e.g. TF Privacy's
      `DifferentiallyPrivateFactory` (user-level DP on top of the record-level
      DP). Default: `FixedDenominatorMeanFactory(clients_per_round)`.
    clients_per_round: The fixed denominator of the default aggregator;
      required without `model_aggregator` and refused with one (the DP
      factory has its own).
    metrics_aggregator: As in `build_example_dp_client_work`.

  Returns:
    A `tff.learning.templates.LearningProcess` (distributor: broadcast;
    finalizer: `server_optimizer`).
  """
  # Fail on a bad value before any TFF tracing.
  DpSgdSettings(learning_rate=client_learning_rate,
                noise_multiplier=noise_multiplier,
                clip=clip,
                expected_batch_size=expected_batch_size,
                local_steps=local_steps)
  if model_aggregator is None:
    if clients_per_round is None:
      raise ValueError('Without model_aggregator, pass clients_per_round: the '
                       'default mean divides by this fixed number.')
    model_aggregator = FixedDenominatorMeanFactory(clients_per_round)
  elif clients_per_round is not None:
    raise ValueError('clients_per_round only sets the default aggregator; '
                     'the given model_aggregator has its own denominator.')
  if not isinstance(model_aggregator,
                    tff.aggregators.UnweightedAggregationFactory):
    raise TypeError(f'model_aggregator must be an UnweightedAggregationFactory,'
                    f' got {model_aggregator!r}.')
  if not isinstance(server_optimizer, tff.learning.optimizers.Optimizer):
    raise TypeError(f'server_optimizer must be a tff.learning.optimizers.'
                    f'Optimizer, got {server_optimizer!r}.')

  @tff.tensorflow.computation
  def initial_model_weights_fn():
    return tff.learning.models.ModelWeights.from_model(model_fn())

  weights_type = initial_model_weights_fn.type_signature.result
  aggregator = tff.aggregators.as_weighted_aggregator(model_aggregator).create(
      weights_type.trainable, tff.TensorType(np.float32))
  client_work = build_example_dp_client_work(
      model_fn=model_fn,
      loss_fn=loss_fn,
      learning_rate=client_learning_rate,
      noise_multiplier=noise_multiplier,
      clip=clip,
      expected_batch_size=expected_batch_size,
      local_steps=local_steps,
      metrics_aggregator=metrics_aggregator)
  return tff.learning.templates.compose_learning_process(
      initial_model_weights_fn,
      tff.learning.templates.build_broadcast_process(weights_type), client_work,
      aggregator,
      tff.learning.templates.build_apply_optimizer_finalizer(
          server_optimizer, weights_type))

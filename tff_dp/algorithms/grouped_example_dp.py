"""Example-level DP-SGD inside each simulated client of the grouped path.

The algorithm is `tff_dp.algorithms.example_dp`'s (Abadi et al. 2016, "Deep
Learning with Differential Privacy", Algorithm 1, Poisson-sampled as
Mironov, Talwar, Zhang 2019 analyze it): each of `local_steps` steps samples
every one of the client's n_k examples with probability q_k = min(1, B /
n_k), computes per-example gradients (`tf.vectorized_map` over the loss of
ONE example), clips each to global L2 norm C, adds N(0, (sigma C)^2) per
coordinate to the sum, divides by B and takes an SGD step; the client sends
its model delta with weight 1, no training metric.

The grouped path runs that, op for op (the same `example_dp.sampling_rate`,
`poisson_sample_indices` and `clipped_gradient_sum`), for every SIMULATED
client inside the group's loop (`tff_dp.algorithms.grouped_client_work`),
on TFF's functional form of the same Keras model. Its seed is drawn per
simulated client (`tff_dp.mechanisms.noise_seeds`: a fresh nonce each time
the loop body runs, under a 128-bit key from the operating system drawn
when the process is built) and folded with the step, as the reference draws
it per TFF call: sampling and noise stay secret and fresh per client, round
and step.

Each client's examples are its n_k DISTINCT examples in its first epoch's
order (the reference's order when --client_epochs is 1; the program sends
example-level runs here only then, see `tff_dp.config_checks`).
"""

import contextlib
import dataclasses
from typing import Sequence

import tensorflow as tf

from tff_dp.algorithms import example_dp
from tff_dp.mechanisms import float64_noise
from tff_dp.mechanisms import noise_seeds
from tff_dp.privacy import run_secrets

# Examples in flight at once when the per-example gradients are looped: the
# loop's iterations are independent, so TF may overlap them.
_LOOP_PARALLEL_ITERATIONS = 16


@dataclasses.dataclass(frozen=True)
class ExampleDp:
  """The clients' DP-SGD and the secret key of its sampling and noise.

  Attributes:
    settings: The validated DP-SGD parameters.
    noise_key: Two signed int64 (`tff_dp.privacy.run_secrets.new_noise_key`).
  """
  settings: example_dp.DpSgdSettings
  noise_key: Sequence[int]


def _per_example_gradients(model, trainable, non_trainable, x, y, *,
                           vectorized: bool):
  """Per-example gradients of the loss of ONE example, stacked.

  `vectorized`: by pfor (`tf.vectorized_map`, without its silent per-op
  fallback); else a loop over the examples (`tf.map_fn`, TF Privacy's
  microbatches of one). Both differentiate each example's own loss, so the
  gradients are the same.
  """

  def one_example(example):
    xi, yi = tf.nest.map_structure(lambda t: t[tf.newaxis], example)
    with tf.GradientTape() as tape:
      tape.watch(trainable)
      logits = model.predict_on_batch((trainable, non_trainable),
                                      xi,
                                      training=True)
      # The loss of a batch of one: whatever the reduction, one example.
      value = tf.reduce_sum(model.loss(output=logits, label=yi))
    return tape.gradient(value,
                         trainable,
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  if not vectorized:
    return tf.map_fn(one_example, (x, y),
                     fn_output_signature=tuple(
                         tf.TensorSpec(t.shape, t.dtype) for t in trainable),
                     parallel_iterations=_LOOP_PARALLEL_ITERATIONS)
  with _quiet_tf_logger():
    return tf.vectorized_map(one_example, (x, y), fallback_to_while_loop=False)


@contextlib.contextmanager
def _quiet_tf_logger():
  """Silences pfor's warnings while it converts (e.g. "Conv2DBackpropFilter
  uses a while_loop. Fix that!", and each op it cannot convert, with its
  traceback, before raising): notes to TF's developers, not to users."""
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel('CRITICAL')
  try:
    yield
  finally:
    logger.setLevel(level)


def vectorizes(model) -> bool:
  """Whether pfor computes the model's per-example gradients.

  Traced once in a scratch graph (a graph, as TFF traces; the model
  decides, never the data). False if pfor cannot convert an op, or if a
  traced function runs a placeholder, which fails only when the worker
  runs it ("You must feed a value for placeholder tensor"; Keras' legacy
  graph network was one, `tff_dp.algorithms.grouped_model`). Then the
  examples are looped.
  """
  trainable, frozen = model.initial_weights
  with tf.Graph().as_default():

    @tf.function
    def gradients(x, y):
      return _per_example_gradients(model,
                                    tuple(tf.constant(t) for t in trainable),
                                    tuple(tf.constant(t) for t in frozen),
                                    x,
                                    y,
                                    vectorized=True)

    try:
      # The model's input spec: a batch of any size.
      traced = gradients.get_concrete_function(*model.input_spec)
    except (ValueError, NotImplementedError):
      return False
    library = traced.graph.as_graph_def().library.function
  return not any(_runs_a_placeholder(f) for f in library)


def _runs_a_placeholder(function_def) -> bool:
  """Whether running `function_def` runs a Placeholder op.

  A function takes its inputs as arguments; a placeholder that its outputs
  or control outputs depend on is an input nobody feeds. (Unreachable ones
  are pruned: Keras' legacy graph network on its input placeholder.)
  """
  nodes = {node.name: node for node in function_def.node_def}
  stack = [
      name.split(':')[0] for name in list(function_def.ret.values()) +
      list(function_def.control_ret.values())
  ]
  seen = set()
  while stack:
    name = stack.pop()
    if name in seen or name not in nodes:
      continue
    seen.add(name)
    if nodes[name].op == 'Placeholder':
      return True
    stack.extend(i.lstrip('^').split(':')[0] for i in nodes[name].input)
  return False


def dp_sgd_update(model, dp: ExampleDp, *, initial, non_trainable, x,
                  y) -> list[tf.Tensor]:
  """One simulated client's local DP-SGD; returns its model delta.

  Args:
    model: The functional model.
    dp: The DP-SGD settings and key.
    initial: The broadcast trainable weights (a tuple).
    non_trainable: The broadcast non-trainable weights.
    x: The client's n_k examples' features.
    y: Their labels.

  Returns:
    initial - trained weights (TFF's sign), not yet sanitized.
  """
  settings = dp.settings
  num_examples = tf.shape(y)[0]
  rate = example_dp.sampling_rate(num_examples, settings.expected_batch_size)
  # Fresh for every execution of these ops: per simulated client and round.
  client_seed = noise_seeds.execution_seed(dp.noise_key)
  noise_std = settings.noise_multiplier * settings.clip
  scale = settings.learning_rate / settings.expected_batch_size
  trainable = tuple(initial)
  # Decided by the model alone, once per trace.
  vectorized = vectorizes(model)
  for step in tf.range(settings.local_steps):
    seeds = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(client_seed, step),
        num=1 + len(trainable))
    indices = example_dp.poisson_sample_indices(num_examples=num_examples,
                                                rate=rate,
                                                seed=seeds[0])
    grads = example_dp.clipped_gradient_sum(
        _per_example_gradients(model,
                               trainable,
                               non_trainable,
                               tf.gather(x, indices),
                               tf.gather(y, indices),
                               vectorized=vectorized), settings.clip)
    trainable = tuple(w - scale * (g + float64_noise.gaussian_as(
        tf.shape(w), seeds[i + 1], noise_std, w.dtype))
                      for i, (w, g) in enumerate(zip(trainable, grads)))
  return [a - b for a, b in zip(initial, trainable)]


def client_options(options, settings: example_dp.DpSgdSettings):
  """`options` (`grouped_client_options.ClientOptions`) running DP-SGD
  under a fresh secret key, with no client metrics and no client state (as
  the reference's example-level client work)."""
  return dataclasses.replace(options,
                             example_dp=ExampleDp(settings,
                                                  run_secrets.new_noise_key()),
                             stateless_client_work=True,
                             client_metrics=False)

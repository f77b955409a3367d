"""Engine (b): the compute floor, one plain TensorFlow program per round.

The same round as DP-FedAvg, without TFF: every client of the round runs local
SGD (learning rate, batch size and epochs of the workload) from the global
model on its own examples in the order `tff_dp.program.client_data` would use; its
update (initial minus final weights) is clipped to L2 norm C by GLOBAL norm
(all variables together); the clipped updates are summed; Gaussian noise of
standard deviation z * C is added to the sum (float64 Box-Muller rounded to
float32, `tff_dp.mechanisms.float64_noise`, as tff-dp's queries draw it since
2026-12-05; before, both drew TF's float32 sampler); the sum is divided by the fixed
clients_per_round; the server applies SGD with momentum to that average, as
`tff.learning.optimizers.build_sgdm` does. All of it is ONE `tf.function`
call per round. No TFF is imported (`tff_dp.mechanisms.float64_noise` is
plain TensorFlow).

W3's transformer is tff-dp's (`tff_dp.models.transformer`: the same layers,
initial weights and causal attention, written here as plain TensorFlow over
the weight tensors), its loss the mean over non-padding labels at every
position, as `tff_dp.algorithms.models.NextTokenLoss`.

Two implementations of the per-client work, both exact per-client clipping:

* `loop`: a graph-mode `tf.while_loop` over the clients (`tf.range` under
  autograph), each client's local steps unrolled (their count is static);
* `vectorized`: `tf.vectorized_map` over the clients of the same per-client
  function (per-client weights stacked on a leading axis).

The floor of a workload is the faster of the two measured; both are reported.
Dropout (CNN) draws stateless per-(round, client) masks so that both
implementations do the same work.

A mechanism row (`workloads.Mechanism`) changes the per-client work as the
mechanism does: FedProx's proximal term, FedSGD's single mean gradient,
capped weights, local clip and noise (in float64 with tff-dp's own
samplers, `tff_dp.mechanisms.float64_noise`, as the mechanism requires),
example-level Poisson-sampled DP-SGD (`loop` only:
its batches have data-dependent sizes), and drops the central clip and
noise where the mechanism has none. DP-FTRL draws and combines the tree's
nodes of the round (`benchmarks.floor_tree`) instead of one Gaussian draw.

  python -m benchmarks.floor --spec=SPEC.json --out=RESULT.json
"""

import math
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from benchmarks import floor_tree
from benchmarks import harness
from benchmarks import models as bench_models
from benchmarks import workloads as workloads_lib
from tff_dp.mechanisms import float64_noise

IMPLEMENTATIONS = ('loop', 'vectorized')


def _mlp_forward(params, x, training, seed):
  del training, seed  # No dropout.
  w1, b1, w2, b2 = params
  return tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2


def _cnn_forward(params, x, training, seed):
  """create_conv_dropout_model's forward pass with stateless dropout."""
  c1, cb1, c2, cb2, d1, db1, d2, db2 = params
  h = tf.reshape(x, (-1,) + workloads_lib.IMAGE_SHAPE)
  h = tf.nn.relu(tf.nn.conv2d(h, c1, strides=1, padding='VALID') + cb1)
  h = tf.nn.relu(tf.nn.conv2d(h, c2, strides=1, padding='VALID') + cb2)
  h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding='VALID')
  if training:
    h = tf.nn.experimental.stateless_dropout(h, rate=0.25, seed=seed)
  h = tf.reshape(h, (tf.shape(h)[0], -1))
  h = tf.nn.relu(tf.matmul(h, d1) + db1)
  if training:
    h = tf.nn.experimental.stateless_dropout(h, rate=0.5, seed=seed + 1)
  return tf.matmul(h, d2) + db2


def _layer_norm(x, gamma, beta):
  # Keras' LayerNormalization(epsilon=1e-5) over the last axis.
  mean, variance = tf.nn.moments(x, axes=[-1], keepdims=True)
  return (x - mean) * tf.math.rsqrt(variance + 1e-5) * gamma + beta


def _dense(x, kernel, bias=None):
  y = tf.tensordot(x, kernel, axes=1)
  return y if bias is None else y + bias


def _causal_attention(q, k, v, heads):
  """`tff_dp.models.transformer.CausalAttention` on [batch, length, width]."""
  batch, length, width = tf.shape(q)[0], tf.shape(q)[1], q.shape[-1]
  q, k, v = (
      tf.reshape(t, [batch, length, heads, width // heads]) for t in (q, k, v))
  scores = tf.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(width // heads)
  causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
  scores = tf.where(causal, scores, scores.dtype.min)
  out = tf.einsum('bhqk,bkhd->bqhd', tf.nn.softmax(scores, axis=-1), v)
  return tf.reshape(out, [batch, length, width])


# Per block, in `_TRANSFORMER_LAYERS` order: ln1 (2), q, k, v, o (2 each),
# ln2 (2), ff1, ff2 (2 each).
_BLOCK_PARAMS = 16


def _transformer_layer_names() -> list[str]:
  """tff-dp's transformer layers with weights, in the floor's order."""
  sizes = dict(workloads_lib.TRANSFORMER_SIZES)
  names = ['token_embedding', 'position_embedding']
  for b in range(sizes['transformer_layers']):
    names += [
        f'block{b}_{part}' for part in ('ln1', 'q', 'k', 'v', 'o', 'ln2', 'ff1',
                                        'ff2')
    ]
  return names + ['final_ln', 'lm_head']


def _transformer_forward(params, x, training, seed):
  """`tff_dp.models.transformer`'s forward pass (no dropout), logits at
  every position."""
  del training, seed
  sizes = dict(workloads_lib.TRANSFORMER_SIZES)
  token, position = params[0], params[1]
  h = tf.gather(token, tf.cast(x, tf.int32)) + position[tf.newaxis]
  for b in range(sizes['transformer_layers']):
    (g1, b1, qk, qb, kk, kb, vk, vb, ok, ob, g2, b2, f1k, f1b, f2k,
     f2b) = params[2 + _BLOCK_PARAMS * b:2 + _BLOCK_PARAMS * (b + 1)]
    a = _layer_norm(h, g1, b1)
    attended = _causal_attention(_dense(a, qk, qb), _dense(a, kk, kb),
                                 _dense(a, vk, vb), sizes['transformer_heads'])
    h = h + _dense(attended, ok, ob)
    a = _layer_norm(h, g2, b2)
    h = h + _dense(tf.nn.gelu(_dense(a, f1k, f1b)), f2k, f2b)
  gamma, beta, head = params[-3:]
  return _dense(_layer_norm(h, gamma, beta), head)


def _forward_fn(model: workloads_lib.ModelName) -> Callable[..., tf.Tensor]:
  if model is workloads_lib.ModelName.MLP:
    return _mlp_forward
  if model is workloads_lib.ModelName.CNN:
    return _cnn_forward
  if model is workloads_lib.ModelName.TRANSFORMER:
    return _transformer_forward
  raise ValueError(f'unknown model {model!r}')


def _transformer_weights(seed: int) -> list[np.ndarray]:
  # tff-dp's own architecture and initializers (pure Keras; no TFF).
  from tff_dp.models import transformer  # pylint: disable=g-import-not-at-top
  sizes = dict(workloads_lib.TRANSFORMER_SIZES)
  model = transformer.build_transformer(
      vocab_size=workloads_lib.TOKEN_VOCAB_SIZE,
      sequence_length=workloads_lib.TOKEN_WINDOW,
      num_layers=sizes['transformer_layers'],
      width=sizes['transformer_width'],
      num_heads=sizes['transformer_heads'],
      ff_width=sizes['transformer_ff_width'],
      seed=seed)
  by_name = {layer.name: layer.get_weights() for layer in model.layers}
  weights = [w for name in _transformer_layer_names() for w in by_name[name]]
  assert sum(w.size for w in weights) == model.count_params()
  return weights


def initial_weights(model: workloads_lib.ModelName,
                    seed: int) -> list[np.ndarray]:
  """The Keras model's initial weights (same shapes, same initializers)."""
  if model is workloads_lib.ModelName.TRANSFORMER:
    return _transformer_weights(seed)
  return [
      w.copy()
      for w in bench_models.build_keras_model(model, seed=seed).get_weights()
  ]


class FloorRound:
  """One DP-FedAvg round of a workload as a single tf.function call."""

  def __init__(self,
               workload: workloads_lib.Workload,
               hyper: workloads_lib.Hyperparameters,
               implementation: str,
               initial: Optional[Sequence[np.ndarray]] = None,
               mechanism: workloads_lib.Mechanism = workloads_lib.DP_FEDAVG):
    """Builds the round.

    Args:
      workload: Shapes, batch size and epochs.
      hyper: Learning rates, momentum, z and C.
      implementation: One of IMPLEMENTATIONS.
      initial: Initial model weights; default: the Keras model's initializers.
      mechanism: The mechanism row (default: DP-FedAvg, gaussian_fixed).
    """
    if implementation not in IMPLEMENTATIONS:
      raise ValueError(f'implementation must be one of {IMPLEMENTATIONS}, '
                       f'got {implementation!r}')
    if mechanism.example_dp and implementation != 'loop':
      raise ValueError('example-level DP-SGD has data-dependent batch sizes: '
                       'loop only')
    self._workload = workload
    self._hyper = hyper
    self._mechanism = mechanism
    self._forward = _forward_fn(workload.model)
    if initial is None:
      initial = initial_weights(workload.model, hyper.model_seed)
    self.weights = [tf.Variable(w) for w in initial]
    self.momentum = [tf.Variable(tf.zeros_like(w)) for w in self.weights]
    steps = workload.epochs * workload.examples_per_client
    self._batches = [(s, min(s + workload.batch_size, steps))
                     for s in range(0, steps, workload.batch_size)]
    per_client = (self._client_deltas_loop if implementation == 'loop' else
                  self._client_deltas_vectorized)
    # DP-FTRL's tree noise (`benchmarks.floor_tree`), a separate hook.
    self._tree = (floor_tree.TreeNoise(
        [w.shape for w in initial],
        stddev=hyper.noise_multiplier * hyper.clip,
        rounds_per_epoch=workloads_lib.tree_rounds_per_epoch(workload))
                  if mechanism.tree else None)
    self._round = tf.function(self._make_round(per_client))

  def _batch_gradients(self, w, x, y, seed):
    with tf.GradientTape() as tape:
      tape.watch(w)
      logits = self._forward(w, x, True, seed)
      losses = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y,
                                                              logits=logits)
      if self._workload.model is workloads_lib.ModelName.TRANSFORMER:
        # tff-dp's NextTokenLoss: the mean over non-padding labels.
        mask = tf.cast(tf.not_equal(y, 0), losses.dtype)
        loss = tf.reduce_sum(losses * mask) / tf.maximum(
            tf.reduce_sum(mask), 1.0)
      else:
        loss = tf.reduce_mean(losses)
    # The token embedding's gradient (tf.gather) is IndexedSlices; the
    # SGD step and the clip need dense tensors (as tff-dp's optimizer).
    return [tf.convert_to_tensor(g) for g in tape.gradient(loss, w)]

  def _local_update(self, x, y, seed):
    """One client's update as its mechanism sends it: local SGD (or the
    mechanism's variant), then clipped by global norm (and noised locally)."""
    mechanism = self._mechanism
    lr = self._hyper.client_learning_rate
    w = list(self.weights)
    w0 = [tf.identity(v) for v in w]
    if mechanism.example_dp:
      w = self._dp_sgd(w, x, y, seed)
    elif mechanism.full_gradient:
      sums = [tf.zeros_like(v) for v in w]
      for step, (lo, hi) in enumerate(self._batches):
        grads = self._batch_gradients(w, x[lo:hi], y[lo:hi], seed + 2 * step)
        sums = [a + float(hi - lo) * g for a, g in zip(sums, grads)]
      # The update is the mean gradient (TFF's FedSGD sign).
      w = [v - a / float(self._batches[-1][1]) for v, a in zip(w0, sums)]
    else:
      for step, (lo, hi) in enumerate(self._batches):
        grads = self._batch_gradients(w, x[lo:hi], y[lo:hi], seed + 2 * step)
        if mechanism.proximal_strength:
          grads = [
              g + mechanism.proximal_strength * (a - v)
              for g, v, a in zip(grads, w, w0)
          ]
        w = [v - lr * g for v, g in zip(w, grads)]
    delta = [a - b for a, b in zip(w0, w)]
    if mechanism.weight_cap is not None:
      weight = min(self._batches[-1][1] / mechanism.weight_cap, 1.0)
      delta = [d * weight for d in delta]
    if mechanism.local:
      delta = self._local_noise(delta, seed)
    if not mechanism.central:
      return delta
    return self._clip(delta, self._hyper.clip)

  @staticmethod
  def _clip(delta, clip, order=2):
    # tf.clip_by_global_norm's arithmetic, written out because its L2Loss op
    # has no vectorized_map converter (it would fall back to a while_loop).
    if order == 1:
      norm = tf.add_n([tf.reduce_sum(tf.abs(d)) for d in delta])
    else:
      norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(d)) for d in delta]))
    scale = clip / tf.maximum(norm, clip)
    return [d * scale for d in delta]

  def _local_noise(self, delta, seed):
    """Local DP's per-client clip (L2 or L1) and noise, in float64 with the
    samplers tff-dp's randomizer uses (`tff_dp.mechanisms.float64_noise`):
    the float64 clip and noise are what the mechanism requires (see that
    module), so they are part of its floor."""
    mechanism = self._mechanism
    laplace = mechanism.local == 'laplace'
    wide = [tf.cast(d, tf.float64) for d in delta]
    clipped = self._clip(wide, mechanism.local_clip, order=1 if laplace else 2)
    sampler = float64_noise.laplace if laplace else float64_noise.gaussian
    noised = []
    for i, (d, c) in enumerate(zip(delta, clipped)):
      # `seed` is the client's [2] seed; offsets keep the draws apart.
      s = seed + tf.constant([0, 5003 + i], seed.dtype)
      noised.append(
          tf.cast(c + sampler(tf.shape(c), s, mechanism.local_noise), d.dtype))
    return noised

  def _dp_sgd(self, w, x, y, seed):
    """Poisson-sampled DP-SGD (Abadi et al. 2016) on one client's examples."""
    noise_multiplier, clip, local_steps = self._mechanism.example_dp
    batch = float(self._workload.batch_size)
    n = tf.shape(y)[0]
    rate = tf.minimum(1.0, batch / tf.cast(n, tf.float32))
    for step in range(local_steps):
      s = seed + tf.constant([0, 7001 + 100 * step], seed.dtype)
      keep = tf.where(tf.random.stateless_uniform([n], seed=s) < rate)[:, 0]

      def one_example(example, w=w):
        xi, yi = example[0][tf.newaxis], example[1][tf.newaxis]
        return self._batch_gradients(w, xi, yi, seed)

      per_example = tf.vectorized_map(one_example,
                                      (tf.gather(x, keep), tf.gather(y, keep)))
      norms = tf.sqrt(
          tf.add_n([
              tf.reduce_sum(tf.square(g), axis=list(range(1, g.shape.rank)))
              for g in per_example
          ]))
      scale = clip / tf.maximum(norms, clip)
      grads = []
      for i, g in enumerate(per_example):
        shape = [-1] + [1] * (g.shape.rank - 1)
        total = tf.reduce_sum(g * tf.reshape(scale, shape), axis=0)
        grads.append(total + float64_noise.gaussian_as(tf.shape(total), s + 1 +
                                                       i, noise_multiplier *
                                                       clip, total.dtype))
      w = [
          v - (self._hyper.client_learning_rate / batch) * g
          for v, g in zip(w, grads)
      ]
    return w

  def _client_deltas_loop(self, x, y, seeds):
    total = [tf.zeros_like(v) for v in self.weights]
    for k in tf.range(tf.shape(x)[0]):
      clipped = self._local_update(x[k], y[k], seeds[k])
      total = [t + c for t, c in zip(total, clipped)]
    return total

  def _client_deltas_vectorized(self, x, y, seeds):
    clipped = tf.vectorized_map(lambda args: self._local_update(*args),
                                (x, y, seeds))
    return [tf.reduce_sum(c, axis=0) for c in clipped]

  def _make_round(self, client_deltas):
    hyper = self._hyper
    clients = float(self._workload.clients)

    def round_fn(x, y, seeds, noise_seed):
      total = client_deltas(x, y, seeds)
      if self._tree is not None:  # DP-FTRL: the tree's work instead.
        noised = self._tree(total, noise_seed)
      else:
        noised = [
            t + float64_noise.gaussian_as(tf.shape(t), noise_seed +
                                          i, hyper.noise_multiplier *
                                          hyper.clip, t.dtype)
            for i, t in enumerate(total)
        ] if self._mechanism.central else total
      average = [n / clients for n in noised]
      # tff.learning.optimizers.build_sgdm: m = mu * m + g; w = w - lr * m.
      for m, w, g in zip(self.momentum, self.weights, average):
        m.assign(hyper.server_momentum * m + g)
        w.assign_sub(hyper.server_learning_rate * m)
      return tf.linalg.global_norm(average)

    return round_fn

  def __call__(self, x: np.ndarray, y: np.ndarray, round_num: int) -> float:
    seeds = np.stack([
        np.full(self._workload.clients, round_num, dtype=np.int32),
        np.arange(self._workload.clients, dtype=np.int32)
    ],
                     axis=1)
    seeds = seeds * np.int32(1000)  # Room for per-step seed offsets.
    noise_seed = np.array([round_num, 7919], dtype=np.int32)
    return float(
        self._round(tf.constant(x), tf.constant(y), tf.constant(seeds),
                    tf.constant(noise_seed)))


def round_inputs(data: workloads_lib.SyntheticData,
                 workload: workloads_lib.Workload,
                 round_num: int) -> tuple[np.ndarray, np.ndarray]:
  """The round's per-client examples in tff_dp.program.client_data's order."""
  order = workloads_lib.round_permutations(workload, round_num)
  rows = np.arange(workload.clients)[:, None]
  return data.x[rows, order], data.y[rows, order]


def round_runner(
    workload: workloads_lib.Workload,
    hyper: workloads_lib.Hyperparameters,
    implementation: str,
    data: Optional[workloads_lib.SyntheticData] = None,
    mechanism: workloads_lib.Mechanism = workloads_lib.DP_FEDAVG,
) -> tuple[Callable[[int], dict[str, float]], list[float]]:
  """Builds the round; returns run_round(r) for `harness.time_rounds`.

  Also returns the list to which every round appends the norm of its noised
  average (a check that the rounds computed finite values).
  """
  if data is None:
    data = workloads_lib.synthetic_data(workload)
  floor_round = FloorRound(workload, hyper, implementation, mechanism=mechanism)
  norms = []

  def run_round(r: int) -> dict[str, float]:
    t0 = time.perf_counter()
    x, y = round_inputs(data, workload, r)
    t1 = time.perf_counter()
    norms.append(floor_round(x, y, r))
    return {'inputs_s': t1 - t0, 'call_s': time.perf_counter() - t1}

  return run_round, norms


def run_workload(workload: workloads_lib.Workload,
                 hyper: workloads_lib.Hyperparameters,
                 implementation: str,
                 clock: Optional[harness.Clock] = None) -> dict[str, Any]:
  """Times one workload with one implementation."""
  data = workloads_lib.synthetic_data(workload)
  start = time.perf_counter()
  run_round, norms = round_runner(workload, hyper, implementation, data)
  build_s = time.perf_counter() - start
  if clock is not None:
    clock.mark('process_built')

  def on_round(r):
    if clock is not None and r == 0:
      clock.mark('first_round_done')

  result = harness.time_rounds(workload, run_round, on_round=on_round)
  result['build_s'] = build_s
  result['implementation'] = implementation
  result['update_norms_finite'] = all(math.isfinite(n) for n in norms)
  return result


def main(argv: list[str]) -> int:
  """Runs the spec's workloads with every implementation."""
  args = harness.parse_args(argv)
  spec = harness.read_json(args.spec)
  clock = harness.Clock(spec['spawn_time'])
  clock.mark('imports_done')
  hyper = workloads_lib.HYPERPARAMETERS
  result = {'engine': 'floor', 'startup': None, 'workloads': [], 'workers': []}
  for i, row in enumerate(spec['rows']):
    workload = workloads_lib.Workload.from_json(row['workload'])
    variants = {}
    for j, implementation in enumerate(
        row.get('implementations', IMPLEMENTATIONS)):
      first = i == 0 and j == 0
      variants[implementation] = run_workload(workload, hyper, implementation,
                                              clock if first else None)
      if first:
        result['startup'] = {
            'workload': workload.name,
            'implementation': implementation,
            **clock.marks
        }
    best = min(variants, key=lambda k: variants[k]['seconds']['median'])
    parameters = sum(
        int(np.prod(w.shape))
        for w in initial_weights(workload.model, hyper.model_seed))
    result['workloads'].append({
        'workload': workload.to_json(),
        'parameters': parameters,
        'best': best,
        'implementations': variants,
        **variants[best]
    })
    harness.write_json(args.out, result)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))

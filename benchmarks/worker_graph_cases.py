"""The graphs `benchmarks.worker_graph` times, each a TFF computation's body.

Graphs whose input is made inside them from a 2-int seed (nothing to
transfer): `chain`, a 50-op elementwise chain on 1000 x 1000 floats; `cnn`,
one W2 client's local work (7 SGD steps of the EMNIST CNN on 100 examples,
batch 16, with dropout) and `cnn_x5`, five clients' in one call; `tiny`,
nothing to compute. Graphs with data to move: `chain_io`, the chain on a
1000 x 1000 argument, returning the matrix (4 MB each way), and
`identity_MB`, four float32 tensors of MB megabytes in all, returned as they
came (transfer only).
"""

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from benchmarks import workloads as workloads_lib

CHAIN_SIDE = 1000
CHAIN_OPS = 50
# One W2 client: 100 examples, batch 16 (7 steps), the EMNIST CNN.
CNN_EXAMPLES = 100
CNN_BATCH = 16
CNN_SHAPES = ((3, 3, 1, 32), (32,), (3, 3, 32, 64), (64,), (9216, 128), (128,),
              (128, 10), (10,))
# W2's state (weights + server momentum) is 9.6 MB, DP-FTRL's (two more
# model copies) 19.2 MB.
IDENTITY_PREFIX = 'identity_'
SEED_SPEC = tf.TensorSpec([2], tf.int32)
CHAIN_SPEC = tf.TensorSpec([CHAIN_SIDE, CHAIN_SIDE], tf.float32)


def _chain(x):
  for i in range(CHAIN_OPS):
    x = tf.sin(x) * 1.0001 + float(i) * 1e-3 if i % 2 else tf.exp(-x) + x
  return x


def chain_graph(seed):
  """A 50-op elementwise chain on a 1000 x 1000 input made inside."""
  return tf.reduce_sum(
      _chain(tf.random.stateless_uniform([CHAIN_SIDE, CHAIN_SIDE], seed)))


def chain_io_graph(x):
  """The same chain on an argument, returning the matrix: 4 MB each way."""
  return _chain(x)


def _cnn_logits(w, x, seed):
  c1, cb1, c2, cb2, d1, db1, d2, db2 = w
  h = tf.reshape(x, (-1,) + workloads_lib.IMAGE_SHAPE)
  h = tf.nn.relu(tf.nn.conv2d(h, c1, strides=1, padding='VALID') + cb1)
  h = tf.nn.relu(tf.nn.conv2d(h, c2, strides=1, padding='VALID') + cb2)
  h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding='VALID')
  h = tf.nn.experimental.stateless_dropout(h, rate=0.25, seed=seed)
  h = tf.reshape(h, (tf.shape(h)[0], -1))
  h = tf.nn.relu(tf.matmul(h, d1) + db1)
  h = tf.nn.experimental.stateless_dropout(h, rate=0.5, seed=seed + 1)
  return tf.matmul(h, d2) + db2


def cnn_clients(clients: int) -> Callable[[tf.Tensor], tf.Tensor]:
  """W2 clients' local SGD, one after the other, on data and weights made
  from the seed; the graph returns the sum of their update norms."""

  def graph(seed):
    return tf.add_n([_cnn_client(seed + 1000 * k) for k in range(clients)])

  return graph


def _cnn_weights(seed):
  """Weights in [-0.04, 0.04] from a cheap pattern (a random draw of the
  1.2M weights would dominate the client's work and is not part of it); the
  seed enters so that Grappler cannot fold them into constants."""
  offset = tf.cast(seed[0] % 2, tf.float32)
  return [
      0.01 * (tf.cast(tf.reshape(tf.range(np.prod(s)) % 9, s), tf.float32) -
              4.0 + offset) for s in CNN_SHAPES
  ]


def _cnn_client(seed):
  w = _cnn_weights(seed)
  w0 = list(w)
  x = tf.random.stateless_uniform([CNN_EXAMPLES, workloads_lib.INPUT_DIM],
                                  seed + 100)
  y = tf.random.stateless_uniform([CNN_EXAMPLES],
                                  seed + 101,
                                  maxval=workloads_lib.NUM_CLASSES,
                                  dtype=tf.int32)
  for step, lo in enumerate(range(0, CNN_EXAMPLES, CNN_BATCH)):
    hi = min(lo + CNN_BATCH, CNN_EXAMPLES)
    with tf.GradientTape() as tape:
      tape.watch(w)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(
              labels=y[lo:hi],
              logits=_cnn_logits(w, x[lo:hi], seed + 200 + 2 * step)))
    w = [v - 0.1 * g for v, g in zip(w, tape.gradient(loss, w))]
  return tf.linalg.global_norm([a - b for a, b in zip(w0, w)])


GRAPHS = {
    'chain': chain_graph,
    'cnn': cnn_clients(1),
    # Five clients' work in one call: does the worker's gap scale with the
    # compute (a slower runtime) or stay put (a fixed cost per call)?
    'cnn_x5': cnn_clients(5),
    # Nothing to compute: the fixed cost of one call.
    'tiny': lambda seed: tf.reduce_sum(seed),
}
# Cases with a fixed argument made once: (graph, TFF parameter type, value).
_CHAIN_INPUT = np.random.default_rng(0).random((CHAIN_SIDE, CHAIN_SIDE),
                                               dtype=np.float32)
ARGUMENT_GRAPHS = {'chain_io': (chain_io_graph, CHAIN_SPEC, _CHAIN_INPUT)}


def identity_graph(tensors):
  """Returns its argument: what moving it to the worker and back costs."""
  return [tf.identity(t) for t in tensors]


def _identity_arrays(megabytes: float) -> list[np.ndarray]:
  # Four tensors, as the measurement that found the jump above ~15 MB.
  n = int(megabytes * 1e6 / 4 / 4)
  rng = np.random.default_rng(0)
  return [rng.random(n, dtype=np.float32) for _ in range(4)]


def _megabytes(name: str) -> float:
  try:
    megabytes = float(name[len(IDENTITY_PREFIX):])
  except ValueError:
    megabytes = float('nan')
  if not 0 < megabytes <= 1000:
    raise ValueError(f'case {name!r}: {IDENTITY_PREFIX}MB takes a size in '
                     '(0, 1000] MB')
  return megabytes


@dataclasses.dataclass
class Case:
  """A graph, its TFF parameter type and the argument of round r."""
  name: str
  fn: Callable[..., Any]
  spec: Any
  argument: Callable[[int], Any]


def cases(names: Sequence[str]) -> list[Case]:
  """The cases named: GRAPHS' and ARGUMENT_GRAPHS' keys, identity_MB."""
  out = []
  for name in names:
    if name in GRAPHS:
      out.append(
          Case(name, GRAPHS[name], SEED_SPEC,
               lambda r: np.array([r, 7919], np.int32)))
    elif name in ARGUMENT_GRAPHS:
      fn, spec, value = ARGUMENT_GRAPHS[name]
      out.append(Case(name, fn, spec, lambda r, value=value: value))
    elif name.startswith(IDENTITY_PREFIX):
      arrays = _identity_arrays(_megabytes(name))
      out.append(
          Case(name,
               identity_graph,
               [tf.TensorSpec(a.shape, tf.float32) for a in arrays],
               lambda r, arrays=arrays: arrays))
    else:
      raise ValueError(f'unknown case {name!r}: one of '
                       f'{sorted(GRAPHS) + sorted(ARGUMENT_GRAPHS)} or '
                       f'{IDENTITY_PREFIX}MB')
  return out

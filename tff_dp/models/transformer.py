"""A small decoder-only transformer language model (GPT-style, pre-LayerNorm).

The architecture of GPT-2 (Radford et al. 2019, "Language Models are
Unsupervised Multitask Learners"), itself the decoder of Vaswani et al. 2017,
"Attention Is All You Need", NeurIPS: token and learned position embeddings,
`num_layers` blocks of causal multi-head self-attention and a two-layer GELU
feed-forward network, each sublayer applied to the LayerNorm of its input and
added back (pre-LN), a final LayerNorm and a dense layer of logits over the
vocabulary. No dropout: federated clients train few steps on small data and
DP noise already regularizes.

Every weight matrix besides the embeddings and the LayerNorms is a layer made
by `dense_factory(units, use_bias=..., name=...)`, one per projection and
named after it (`block{i}_q`, `_k`, `_v`, `_o`, `_ff1`, `_ff2`, `lm_head`),
and attention splits heads with reshapes and einsums on those layers' outputs
(no `tf.keras.layers.MultiHeadAttention`): a parameter-efficient variant
(LoRA adapters, Hu et al. 2022) replaces the factory and finds every
projection by name.

Initial weights are seeded, as the project's other models are
(`tff_dp.algorithms.models`): TFF runs the initializers inside its own
computation, so the seed goes into the initializers, not into a later
assignment. After the factory returns a layer, and before the layer is
built, its `kernel_initializer` (and `bias_initializer`, if it has them) are
replaced by seeded ones; a factory whose layers create other weights seeds
those itself.

Causality: the attention of position t sees positions 0..t only (a mask
sets the scores of later keys to the most negative float before the softmax,
whose exponentials are then exactly 0), so the logits at t depend on the
tokens 0..t only, bit for bit. Padding (id 0) is an ordinary token to the
model; the loss and the accuracy skip its positions
(`tff_dp.algorithms.models`).
"""

import math
from typing import Callable

import tensorflow as tf

# GPT-2's initialization scale of the embeddings and projections.
_INIT_STDDEV = 0.02


class PositionEmbedding(tf.keras.layers.Layer):
  """Adds a learned embedding of each position to [batch, length, width]."""

  def __init__(self, sequence_length: int, width: int, *, seed: int, **kwargs):
    super().__init__(**kwargs)
    self._sequence_length = sequence_length
    self._width = width
    self._seed = seed

  def build(self, input_shape):
    self.embeddings = self.add_weight(
        name='embeddings',
        shape=(self._sequence_length, self._width),
        initializer=tf.keras.initializers.RandomNormal(stddev=_INIT_STDDEV,
                                                       seed=self._seed))
    super().build(input_shape)

  def call(self, inputs):
    length = tf.shape(inputs)[1]
    return inputs + self.embeddings[tf.newaxis, :length, :]

  def get_config(self):
    return {
        **super().get_config(), 'sequence_length': self._sequence_length,
        'width': self._width,
        'seed': self._seed
    }


class CausalAttention(tf.keras.layers.Layer):
  """Multi-head scaled dot-product attention of each position on the earlier
  ones; no weights (the projections are the caller's layers).

  Takes [q, k, v], each [batch, length, num_heads * head_width], and returns
  the heads' outputs concatenated, [batch, length, num_heads * head_width].
  """

  def __init__(self, num_heads: int, **kwargs):
    super().__init__(**kwargs)
    self._num_heads = num_heads

  def _split(self, x):
    batch, length = tf.shape(x)[0], tf.shape(x)[1]
    head_width = x.shape[-1] // self._num_heads
    return tf.reshape(x, [batch, length, self._num_heads, head_width])

  def call(self, inputs):
    q, k, v = (self._split(x) for x in inputs)
    head_width = q.shape[-1]
    scores = tf.einsum('bqhd,bkhd->bhqk', q, k) / math.sqrt(head_width)
    length = tf.shape(scores)[-1]
    # Row t keeps keys 0..t: the lower triangle.
    causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
    scores = tf.where(causal, scores, scores.dtype.min)
    weights = tf.nn.softmax(scores, axis=-1)
    out = tf.einsum('bhqk,bkhd->bqhd', weights, v)
    batch, length = tf.shape(out)[0], tf.shape(out)[1]
    return tf.reshape(out, [batch, length, self._num_heads * head_width])

  def get_config(self):
    return {**super().get_config(), 'num_heads': self._num_heads}


def _seeded(layer: tf.keras.layers.Layer, seed: int,
            stddev: float) -> tf.keras.layers.Layer:
  """Gives a factory's unbuilt layer seeded initializers (module docstring)."""
  if hasattr(layer, 'kernel_initializer'):
    layer.kernel_initializer = tf.keras.initializers.RandomNormal(stddev=stddev,
                                                                  seed=seed)
  if hasattr(layer, 'bias_initializer'):
    layer.bias_initializer = tf.keras.initializers.Zeros()
  return layer


def _layer_norm(name: str) -> tf.keras.layers.LayerNormalization:
  return tf.keras.layers.LayerNormalization(epsilon=1e-5, name=name)


def _block(x, i: int, *, num_heads: int, width: int, ff_width: int,
           num_layers: int, dense_factory, seed: int):
  """One pre-LN block: x + attention(ln1(x)), then + ff(ln2(x))."""

  def dense(units, suffix, offset, stddev=_INIT_STDDEV):
    layer = dense_factory(units, use_bias=True, name=f'block{i}_{suffix}')
    return _seeded(layer, seed + offset, stddev)

  # Six seeds per block, after the embeddings' 0 and 1 and the head's 2.
  base = 3 + 6 * i
  # GPT-2 scales the projections into the residual stream by 1/sqrt(2 L).
  residual_stddev = _INIT_STDDEV / math.sqrt(2 * num_layers)
  h = _layer_norm(f'block{i}_ln1')(x)
  q = dense(width, 'q', base)(h)
  k = dense(width, 'k', base + 1)(h)
  v = dense(width, 'v', base + 2)(h)
  attended = CausalAttention(num_heads, name=f'block{i}_attention')([q, k, v])
  x = x + dense(width, 'o', base + 3, residual_stddev)(attended)
  h = _layer_norm(f'block{i}_ln2')(x)
  # A layer, not the bare function: a TF op with constants (GELU's 0.5) in
  # a functional model fails to build inside a tf.function traced in a
  # TF1 graph, which is where the grouped path rebuilds the model
  # (`tff_dp.algorithms.grouped_model`). Same function, no weights.
  h = tf.keras.layers.Activation('gelu', name=f'block{i}_gelu')(dense(
      ff_width, 'ff1', base + 4)(h))
  return x + dense(width, 'ff2', base + 5, residual_stddev)(h)


def _check_sizes(**sizes: int) -> None:
  for name, value in sizes.items():
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ValueError(f'{name} must be a positive int, got {value!r}')
  if sizes['width'] % sizes['num_heads']:
    raise ValueError(f"width {sizes['width']} is not a multiple of "
                     f"num_heads {sizes['num_heads']}")


def build_transformer(*,
                      vocab_size: int,
                      sequence_length: int,
                      num_layers: int,
                      width: int,
                      num_heads: int,
                      ff_width: int,
                      dense_factory: Callable[
                          ..., tf.keras.layers.Layer] = tf.keras.layers.Dense,
                      seed: int = 0) -> tf.keras.Model:
  """Returns the decoder-only transformer as an uncompiled functional model.

  Args:
    vocab_size: Number of token ids (inputs and logits).
    sequence_length: The context: positions of the input (and of the
      position embedding).
    num_layers: Number of transformer blocks.
    width: Model width (embeddings, attention, residual stream).
    num_heads: Attention heads; must divide `width`.
    ff_width: Hidden units of each block's feed-forward network.
    dense_factory: Makes every projection: called as `dense_factory(units,
      use_bias=..., name=...)`; see the module docstring for the names.
    seed: Seed of the initial weights.

  Returns:
    A model from int32 token ids [batch, sequence_length] to float32 logits
    [batch, sequence_length, vocab_size] (at position t, of the token at
    t + 1).

  Raises:
    ValueError: For a size that is not a positive int, or heads that do not
      divide the width.
  """
  _check_sizes(vocab_size=vocab_size,
               sequence_length=sequence_length,
               num_layers=num_layers,
               width=width,
               num_heads=num_heads,
               ff_width=ff_width)
  tokens = tf.keras.Input(shape=(sequence_length,),
                          dtype=tf.int32,
                          name='tokens')
  x = tf.keras.layers.Embedding(
      vocab_size,
      width,
      embeddings_initializer=tf.keras.initializers.RandomNormal(
          stddev=_INIT_STDDEV, seed=seed),
      name='token_embedding')(tokens)
  x = PositionEmbedding(sequence_length,
                        width,
                        seed=seed + 1,
                        name='position_embedding')(x)
  for i in range(num_layers):
    x = _block(x,
               i,
               num_heads=num_heads,
               width=width,
               ff_width=ff_width,
               num_layers=num_layers,
               dense_factory=dense_factory,
               seed=seed)
  x = _layer_norm('final_ln')(x)
  head = _seeded(dense_factory(vocab_size, use_bias=False, name='lm_head'),
                 seed + 2, _INIT_STDDEV)
  return tf.keras.Model(tokens, head(x), name='transformer')

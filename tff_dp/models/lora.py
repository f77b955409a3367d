"""LoRA: a dense layer with a frozen kernel and a trainable low-rank update.

Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models" (ICLR;
arXiv 2106.09685): a pretrained weight matrix W0 stays frozen and the layer
learns a low-rank update, h = W0 x + (alpha / r) B A x, with A (r x in)
drawn at random and B (out x r) zero, so that at initialization the layer
computes exactly what the base layer computes. Keras stores kernels as
(in, out), the transpose of the paper's W; here `lora_a` is A^T, (in, r),
and `lora_b` is B^T, (r, out), so the layer's kernel is
`kernel + (alpha / r) * lora_a @ lora_b`.

The frozen kernel and bias are created NON-trainable (`add_weight(trainable=
False)`): TFF's Keras wrapper puts them in `ModelWeights.non_trainable`, so the
client update, the aggregator and a DP query see the adapters only, and the
noise of a DP mechanism is drawn in the adapters' dimension.

FFA-LoRA (Sun, Qin, Li, Xu 2024, "Improving LoRA in Privacy-preserving
Federated Learning", ICLR; arXiv 2403.12313) freezes A at its random
initialization and trains B only (`freeze_a=True`). Their argument: under DP
the noise on both factors enters the update as a product (B + noise)(A +
noise), which LoRA's scale alpha/r amplifies, and the server's average of
products B_k A_k is not the product of the averages (the "discordance" of
federated LoRA); with A fixed and shared, the update B A is linear in the
trained B, so averaging and noising B is averaging and noising the update.
It halves the trained parameters of a square layer. Both are offered
(`tff_dp.config.Trainable.LORA` and `FFA_LORA`); plain LoRA stays the
default variant because it is the common reference point.

Seeds: A's initializer is seeded (`seed`), so a run's initial model is
reproducible, as every other model's is (`tff_dp.algorithms.models`).
"""

import itertools
from typing import Callable

import numpy as np
import tensorflow as tf


def _check_rank_alpha(rank, alpha) -> None:
  if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
    raise ValueError(f'LoRA rank must be a positive int, got {rank!r}')
  if not isinstance(alpha,
                    (int, float)) or not np.isfinite(alpha) or (alpha <= 0):
    raise ValueError(f'LoRA alpha must be a positive number, got {alpha!r}')


class LoraDense(tf.keras.layers.Layer):
  """`tf.keras.layers.Dense` with a frozen kernel and bias and a LoRA update.

  Its `kernel_initializer` and `bias_initializer` initialize the frozen base
  weights (a pretrained model's weights are assigned over them); `lora_a` is
  drawn from a seeded He-uniform of bound 1/sqrt(in) (the `kaiming_uniform
  (a=sqrt(5))` of Microsoft's loralib) and `lora_b` is zero.
  """

  def __init__(self,
               units: int,
               *,
               rank: int,
               alpha: float,
               seed: int = 0,
               freeze_a: bool = False,
               activation=None,
               use_bias: bool = True,
               kernel_initializer='glorot_uniform',
               bias_initializer='zeros',
               **kwargs):
    """Args: `units`, `activation`, `use_bias` and the initializers as
    Dense's; `rank` r >= 1; `alpha` > 0 (the update is scaled by alpha/r);
    `seed` of A's initializer; `freeze_a` for FFA-LoRA (module docstring)."""
    super().__init__(**kwargs)
    _check_rank_alpha(rank, alpha)
    self.units = int(units)
    self.rank = rank
    self.alpha = float(alpha)
    self.seed = int(seed)
    self.freeze_a = bool(freeze_a)
    self.activation = tf.keras.activations.get(activation)
    self.use_bias = bool(use_bias)
    self.kernel_initializer = tf.keras.initializers.get(kernel_initializer)
    self.bias_initializer = tf.keras.initializers.get(bias_initializer)

  @property
  def scale(self) -> float:
    """alpha / r, the factor of the low-rank update."""
    return self.alpha / self.rank

  def build(self, input_shape):
    in_dim = int(input_shape[-1])
    # Frozen whatever the layer's `trainable`: the base never trains.
    self.kernel = self.add_weight('kernel', (in_dim, self.units),
                                  initializer=self.kernel_initializer,
                                  trainable=False)
    self.bias = (self.add_weight('bias', (self.units,),
                                 initializer=self.bias_initializer,
                                 trainable=False) if self.use_bias else None)
    self.lora_a = self.add_weight(
        'lora_a', (in_dim, self.rank),
        initializer=tf.keras.initializers.VarianceScaling(
            scale=1.0 / 3.0,
            mode='fan_in',
            distribution='uniform',
            seed=self.seed),
        trainable=not self.freeze_a)
    self.lora_b = self.add_weight('lora_b', (self.rank, self.units),
                                  initializer='zeros',
                                  trainable=True)
    super().build(input_shape)

  def call(self, inputs):
    # x A^T B^T costs (in + out) r per row instead of in * out for the
    # merged kernel's update.
    update = tf.matmul(tf.matmul(inputs, self.lora_a), self.lora_b)
    outputs = tf.matmul(inputs, self.kernel) + self.scale * update
    if self.bias is not None:
      outputs = outputs + self.bias
    return self.activation(outputs)

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1].concatenate([self.units])

  def get_config(self):
    return {
        **super().get_config(),
        'units':
            self.units,
        'rank':
            self.rank,
        'alpha':
            self.alpha,
        'seed':
            self.seed,
        'freeze_a':
            self.freeze_a,
        'activation':
            tf.keras.activations.serialize(self.activation),
        'use_bias':
            self.use_bias,
        'kernel_initializer':
            tf.keras.initializers.serialize(self.kernel_initializer),
        'bias_initializer':
            tf.keras.initializers.serialize(self.bias_initializer),
    }

  def merged_kernel(self) -> np.ndarray:
    """kernel + (alpha / r) lora_a @ lora_b, the kernel of the equivalent
    Dense layer (eager)."""
    return (self.kernel.numpy() +
            self.scale * self.lora_a.numpy() @ self.lora_b.numpy())


def dense_factory(
    rank: int,
    alpha: float,
    seed: int,
    *,
    freeze_a: bool = False) -> Callable[..., tf.keras.layers.Layer]:
  """A `dense_factory` (`tff_dp.models.transformer.build_transformer`'s) of
  `LoraDense` layers.

  The i-th layer it makes (from 0) seeds its A with `seed + i`: distinct
  adapters, the same for the same sequence of calls.

  Args:
    rank: r of every adapter.
    alpha: alpha of every adapter.
    seed: First seed of the A initializers.
    freeze_a: FFA-LoRA (module docstring).

  Raises:
    ValueError: For a rank below 1 or an alpha that is not positive.
  """
  _check_rank_alpha(rank, alpha)
  counter = itertools.count()

  def make(units: int, **kwargs) -> LoraDense:
    return LoraDense(units,
                     rank=rank,
                     alpha=alpha,
                     seed=seed + next(counter),
                     freeze_a=freeze_a,
                     **kwargs)

  return make


_DENSE_ARGS = ('units', 'activation', 'use_bias', 'kernel_initializer',
               'bias_initializer', 'name')


def add_adapters(model: tf.keras.Model,
                 *,
                 rank: int,
                 alpha: float,
                 seed: int,
                 freeze_a: bool = False) -> tf.keras.Model:
  """A copy of `model` whose Dense layers are `LoraDense` with the same base
  initializers (for models built without a `dense_factory`).

  The copy is built by `tf.keras.models.clone_model`, so its base weights are
  those the original's initializers draw (the same values if they are
  seeded), not the original's current values: call it on a freshly built
  model, inside TFF's model constructor (where variables are initialized
  by their initializers, never assigned).

  Raises:
    ValueError: If `model` has no Dense layer, or for a bad rank or alpha.
  """
  _check_rank_alpha(rank, alpha)
  if not any(
      type(layer) is tf.keras.layers.Dense for layer in leaf_layers(model)):  # pylint: disable=unidiomatic-typecheck
    raise ValueError(f'LoRA adapts Dense layers and the model '
                     f'{model.name!r} has none')
  return _with_adapters(model,
                        counter=itertools.count(),
                        rank=rank,
                        alpha=alpha,
                        seed=seed,
                        freeze_a=freeze_a)


def _with_adapters(model, *, counter, rank, alpha, seed, freeze_a):
  """`add_adapters` without the check, recursing into nested models."""

  def clone(layer):
    if isinstance(layer, tf.keras.Model):
      return _with_adapters(layer,
                            counter=counter,
                            rank=rank,
                            alpha=alpha,
                            seed=seed,
                            freeze_a=freeze_a)
    # Exactly Dense: subclasses may compute something else.
    if type(layer) is not tf.keras.layers.Dense:  # pylint: disable=unidiomatic-typecheck
      return layer.__class__.from_config(layer.get_config())
    config = layer.get_config()
    return LoraDense(rank=rank,
                     alpha=alpha,
                     seed=seed + next(counter),
                     freeze_a=freeze_a,
                     **{k: config[k] for k in _DENSE_ARGS})

  return tf.keras.models.clone_model(model, clone_function=clone)


def leaf_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
  """The model's layers, those of nested models in their place."""
  leaves = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      leaves += leaf_layers(layer)
    else:
      leaves.append(layer)
  return leaves


def merge(model: tf.keras.Model) -> tf.keras.Model:
  """A plain-Keras copy of `model` with every adapter folded into its kernel.

  Each `LoraDense` becomes a `tf.keras.layers.Dense` of kernel
  `kernel + (alpha / r) lora_a @ lora_b` and the same bias and activation;
  every other layer keeps its weights. For export and for checking that the
  adapters compute what the merged kernel does (eager only).
  """

  def clone(layer):
    if isinstance(layer, tf.keras.Model):
      return merge(layer)  # Its weights set already.
    if isinstance(layer, LoraDense):
      return tf.keras.layers.Dense(layer.units,
                                   activation=layer.activation,
                                   use_bias=layer.use_bias,
                                   name=layer.name)
    return layer.__class__.from_config(layer.get_config())

  merged = tf.keras.models.clone_model(model, clone_function=clone)
  for source, target in zip(model.layers, merged.layers):
    if isinstance(source, tf.keras.Model):
      continue
    if isinstance(source, LoraDense):
      weights = [source.merged_kernel()]
      if source.use_bias:
        weights.append(source.bias.numpy())
      target.set_weights(weights)
    else:
      target.set_weights(source.get_weights())
  return merged


def adapter_layers(model: tf.keras.Model) -> list[LoraDense]:
  """The model's `LoraDense` layers, in order."""
  return [layer for layer in leaf_layers(model) if isinstance(layer, LoraDense)]

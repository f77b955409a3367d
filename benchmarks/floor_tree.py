"""The compute floor's DP-FTRL noise: the tree's work per round, no TFF.

DP-FTRL (Kairouz, McMahan, Song, Thakkar, Thakurta, Xu 2021, "Practical and
Private (Deep) Learning without Sampling or Shuffling") noises the PREFIX
sums of the clipped updates with a binary tree over the rounds of an epoch,
restarted every epoch; tff-dp runs TF Privacy's tree with Honaker 2015's
estimator (`tff_dp.mechanisms.epoch_tree`). Its floor (`benchmarks.floor.
FloorRound` with `workloads.Mechanism.tree`) must do the work the mechanism
requires per round instead of the Gaussian mechanism's single draw. After
the clients' sum, for the leaf count k (1-based) of the epoch's tree:

* the prefix noise: the Honaker-weighted sum of the stored nodes (one per
  set bit of k, weight 1 / (2 - 2^-level));
* the residual released: sum + prefix noise - the previous prefix noise;
* the next leaf, prepared in advance as TF Privacy's tree does: at the
  epoch's last round one draw (the fresh tree's first leaf); otherwise
  1 + (the trailing one bits of k) draws of the model's size, each completed
  level merged into its parent (0.5 (left + right) + node), and the result
  stored.

Every draw is float64 Box-Muller rounded to float32
(`tff_dp.mechanisms.float64_noise.gaussian_as`), as tff-dp's tree draws it.
The node values need not equal tff-dp's (the floor's seeds are public); the
number of draws and passes over the model is the same, except that the
weighted sum reads every slot of the buffer (zero weights for the levels
absent from k): at most log2(rounds per epoch) + 1 slots.
"""

from typing import Sequence

import tensorflow as tf

from tff_dp.mechanisms import float64_noise


def _trailing_ones(k: tf.Tensor) -> tf.Tensor:
  """The number of trailing one bits of the int32 k >= 0."""
  changed = tf.bitwise.bitwise_xor(k, k + 1)  # 2^(t+1) - 1 for t ones.
  return tf.cast(tf.raw_ops.PopulationCount(x=changed), tf.int32) - 1


def node_draws(leaves: tf.Tensor, rounds_per_epoch: int) -> tf.Tensor:
  """The nodes (model-sized draws) the tree draws after releasing the
  prefix of `leaves` (1-based) leaves: the fresh tree's first leaf after an
  epoch's last round, else the next leaf and its completed parents."""
  return tf.where(tf.equal(leaves, rounds_per_epoch), 1,
                  1 + _trailing_ones(leaves))


class TreeNoise:
  """The tree's per-round noise work on the floor's summed update."""

  def __init__(self, shapes: Sequence[Sequence[int]], *, stddev: float,
               rounds_per_epoch: int):
    """Builds the tree's buffers (variables, as the floor's model).

    Args:
      shapes: The shapes of the model's tensors (the summed update's).
      stddev: The std of every node's noise (z C).
      rounds_per_epoch: The tree restarts after this many rounds.
    """
    if rounds_per_epoch < 1:
      raise ValueError(f'rounds_per_epoch must be >= 1, got {rounds_per_epoch}')
    self._stddev = stddev
    self._period = rounds_per_epoch
    # k <= rounds_per_epoch has at most bit_length(rounds_per_epoch) bits.
    levels = int(rounds_per_epoch).bit_length()
    self._level_weights = tf.constant(
        [1.0 / (2.0 - 0.5**level) for level in range(levels)], tf.float32)
    # As the tree's initial state: the first leaf drawn, the rest empty.
    self._buffer = [
        tf.Variable(
            tf.concat([
                self._draw(s, tf.constant([-1, i]))[tf.newaxis],
                tf.zeros([levels - 1] + list(s), tf.float32)
            ], 0)) for i, s in enumerate(shapes)
    ]
    self._previous = [tf.Variable(tf.zeros(s, tf.float32)) for s in shapes]

  def _draw(self, shape, seed):
    return float64_noise.gaussian_as(shape, seed, self._stddev, tf.float32)

  def __call__(self, total: Sequence[tf.Tensor],
               noise_seed: tf.Tensor) -> list[tf.Tensor]:
    """The residual released for `total` in the round `noise_seed[0]`.

    Args:
      total: The round's sum of clipped updates.
      noise_seed: The floor's [2] int32 round seed [round_num, constant];
        round_num (0-based) gives the leaf count.
    """
    leaves = tf.math.floormod(noise_seed[0], self._period) + 1
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(leaves, tf.range(tf.size(self._level_weights))),
        1)
    weights = self._level_weights * tf.cast(bits, tf.float32)
    restart = tf.equal(leaves, self._period)
    draws = node_draws(leaves, self._period)
    released = []
    for i, (t, buffer,
            previous) in enumerate(zip(total, self._buffer, self._previous)):
      prefix = tf.tensordot(weights, buffer, axes=1)
      released.append(t + prefix - previous)
      seed = noise_seed + tf.constant([0, 1000 * i], noise_seed.dtype)
      shape = tf.shape(t)

      def merge(j, value, buffer=buffer, seed=seed, shape=shape):
        node = self._draw(shape, seed + tf.stack([0, j]))
        return j + 1, 0.5 * (buffer[j - 1] + value) + node

      _, value = tf.while_loop(lambda j, _: j < draws, merge,
                               (tf.constant(1), self._draw(shape, seed)))
      buffer.scatter_nd_update([[draws - 1]], value[tf.newaxis])
      previous.assign(tf.where(restart, tf.zeros_like(prefix), prefix))
    return released

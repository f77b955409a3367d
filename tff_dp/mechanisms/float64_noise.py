"""Float64 noise samplers of every mechanism, as plain TensorFlow ops.

Every noise draw of tff-dp comes from here: the central Gaussian queries and
DP-FTRL's tree (`tff_dp.mechanisms.dp_queries`), example-level DP-SGD
(`tff_dp.algorithms.example_dp`, `grouped_example_dp`) and the local
randomizer (`tff_dp.mechanisms.local_dp`). They draw in float64 so that
the tails are not cut at float32 resolution: a float32 uniform has 23
random bits, so an inverse-CDF or Box-Muller sample stops near 16 b
(Laplace) or 5.7 sigma (Gaussian), and an output beyond a neighbour's
truncated support is a distinguishing event that no epsilon covers (Mironov
2012, "On significance of the least significant bits for differential
privacy"; Jin et al. 2022, "Are we there yet? Timing and floating-point
attacks on differential privacy systems", IEEE S&P). This module only holds
the samplers, without TFF, so that the benchmark's compute floor
(`benchmarks.floor`) draws its noise with the same ops as tff-dp.

Laplace (Dwork, McSherry, Nissim, Smith 2006): X = S * E * b with E ~ Exp(1)
and an independent uniform sign S, which has exactly the Laplace(0, b) law
(|X| ~ Exp(mean b), symmetric). Both come from ONE 64-bit Philox draw per
coordinate: its top 53 bits give u = k 2^-53 in [0, 1), exact in float64,
and E = -log1p(-u) is finite (at most 53 ln 2 = 36.7); its lowest bit gives
S. This is one draw and one log per coordinate where the difference of two
exponentials (the form used before) took two of each, with the same
resolution (its uniforms have 52 random bits, tails up to 36.0 b).

Gaussian: Box-Muller on 53-bit uniforms, because TF's float64 sampler
truncates at 5.68 sigma (see `gaussian`).
"""

import math

import tensorflow as tf

# The 53 high bits of a uint64 give every multiple of 2^-53 in [0, 1).
_MANTISSA_SHIFT = 11
_TWO_TO_MINUS_53 = 2.0**-53


def _high_bits(bits: tf.Tensor) -> tf.Tensor:
  """The top 53 bits of uint64 draws, as exact float64 integers."""
  return tf.cast(
      tf.bitwise.right_shift(bits, tf.constant(_MANTISSA_SHIFT, tf.uint64)),
      tf.float64)


def laplace(shape, seed: tf.Tensor, scale) -> tf.Tensor:
  """Float64 Laplace(0, scale) noise of `shape` under a stateless `seed`.

  Args:
    shape: The noise's shape (a tensor or a list).
    seed: A [2] int32 or int64 seed of the stateless Philox generator.
    scale: The Laplace scale b (a float or a scalar float64 tensor).

  Returns:
    A float64 tensor of i.i.d. Laplace(0, b) draws.
  """
  return laplace_from_bits(_uint64(shape, seed), scale)


def laplace_from_bits(bits: tf.Tensor, scale) -> tf.Tensor:
  """Laplace(0, scale) from uniform uint64 `bits`, one draw per entry."""
  u = _high_bits(bits) * _TWO_TO_MINUS_53
  magnitude = -tf.math.log1p(-u) * scale
  negative = tf.equal(tf.bitwise.bitwise_and(bits, tf.constant(1, tf.uint64)),
                      tf.constant(1, tf.uint64))
  return tf.where(negative, -magnitude, magnitude)


def gaussian(shape, seed: tf.Tensor, stddev) -> tf.Tensor:
  """Float64 N(0, stddev^2) noise of `shape` under a stateless `seed`.

  Box-Muller (Box and Muller 1958) on 53-bit uniforms u = (k + 1) 2^-53 in
  (0, 1]: radius sqrt(-2 ln u) up to 8.57, no atom. TF's own
  `stateless_normal` clamps its first uniform at 1e-7 in float64 as in
  float32 (`BoxMullerDouble` in tsl/lib/random/random_distributions.h), so
  its samples stop at 5.68 sigma with an atom of mass 1e-7 on that circle.
  """
  count = tf.reduce_prod(shape)
  bits = _uint64(tf.stack([2, (count + 1) // 2]), seed)
  return tf.reshape(gaussian_from_bits(bits, stddev)[:count], shape)


def gaussian_as(shape, seed: tf.Tensor, stddev, dtype: tf.DType) -> tf.Tensor:
  """`gaussian` rounded once to `dtype` (the noised value's), any `stddev`.

  Rounding a float64 sample to float32 keeps its tails (float32 reaches
  far beyond 8.57 sigma); only drawing in float32 would cut them.
  """
  stddev = tf.cast(stddev, tf.float64)
  return tf.cast(gaussian(shape, seed, stddev), dtype)


def gaussian_from_bits(bits: tf.Tensor, stddev) -> tf.Tensor:
  """2 n normals from uniform uint64 `bits` of shape [2, n] (Box-Muller)."""
  u = (_high_bits(bits) + 1.0) * _TWO_TO_MINUS_53
  radius = tf.sqrt(-2.0 * tf.math.log(u[0])) * stddev
  angle = (2.0 * math.pi) * u[1]
  # r cos(t) and r sin(t) are independent N(0, stddev^2).
  return tf.concat([radius * tf.cos(angle), radius * tf.sin(angle)], 0)


def _uint64(shape, seed: tf.Tensor) -> tf.Tensor:
  return tf.random.stateless_uniform(shape,
                                     seed=seed,
                                     minval=None,
                                     maxval=None,
                                     dtype=tf.uint64)

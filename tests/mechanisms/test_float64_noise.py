"""Tests for tff_dp.mechanisms.float64_noise: the law of each sampler, and
tails that no float32 step or clamp cuts.

Statistical checks use 6 standard errors on d = 1e6 i.i.d. draws (each
two-sided check flakes with probability ~2e-9): the sample std's relative SE
is sqrt((kurtosis - 1) / (4d)) (Laplace: kurtosis 6; Gaussian: 3), the
Laplace mean absolute deviation's SE is b / sqrt(d), the mean's SE is
std / sqrt(d), a correlation's SE is 1 / sqrt(d). The tails are checked on
the deterministic transforms from the extreme bit patterns, which no sample
of practical size reaches (P(|N(0, 1)| > 5.68) = 1.3e-8).
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tff_dp.mechanisms import float64_noise

_D = 1_000_000
_ALL_ONES = np.uint64(2**64 - 1)


def _within(value, expected, se, what):
  assert abs(value - expected) < 6 * se, (what, value, expected, se)


def test_laplace_law():
  b = 0.4
  x = float64_noise.laplace([_D], tf.constant([3, 9], tf.int64), b).numpy()
  assert x.dtype == np.float64 and x.shape == (_D,)
  std = math.sqrt(2) * b
  _within(np.mean(x), 0.0, std / math.sqrt(_D), 'mean')
  _within(np.mean(np.abs(x)), b, b / math.sqrt(_D), 'MAD')
  _within(np.std(x), std, std * math.sqrt(5 / (4 * _D)), 'std')
  # Both signs equally often (SE 0.5 / sqrt(d)).
  _within(np.mean(x > 0), 0.5, 0.5 / math.sqrt(_D), 'sign')
  # Drawn in float64: almost no draw lies on the float32 grid.
  assert np.mean(x == x.astype(np.float32)) < 1e-3


def test_gaussian_law_and_independent_halves():
  sigma = 0.7
  # Odd count: the last pair's second normal is dropped.
  x = float64_noise.gaussian(tf.constant([_D + 1]),
                             tf.constant([5, 1], tf.int32), sigma).numpy()
  assert x.dtype == np.float64 and x.shape == (_D + 1,)
  _within(np.mean(x), 0.0, sigma / math.sqrt(_D), 'mean')
  _within(np.std(x), sigma, sigma / math.sqrt(2 * _D), 'std')
  # The cosine and sine halves are independent.
  half = _D // 2
  corr = np.corrcoef(x[:half], x[half:2 * half])[0, 1]
  assert abs(corr) < 6 / math.sqrt(half), corr
  assert np.mean(x == x.astype(np.float32)) < 1e-3


def test_gaussian_keeps_the_shape():
  x = float64_noise.gaussian([3, 5, 2], tf.constant([1, 2], tf.int64), 1.0)
  assert x.shape == (3, 5, 2) and x.dtype == tf.float64


def test_laplace_tail_reaches_53_bits():
  # All bits set: u = 1 - 2^-53, |x| = 53 ln 2 b, negative (lowest bit 1).
  x = float64_noise.laplace_from_bits(
      tf.constant([_ALL_ONES, _ALL_ONES - np.uint64(1)], tf.uint64), 2.0)
  np.testing.assert_allclose(x.numpy(),
                             [-2 * 53 * math.log(2), 2 * 53 * math.log(2)],
                             rtol=1e-9)


def test_gaussian_is_not_clamped_at_5_68_sigma():
  # The smallest uniform, 2^-53: radius sqrt(2 * 53 ln 2) = 8.57 (TF's own
  # sampler clamps the uniform at 1e-7: 5.68). Angle u = 2^-53 * 2^53 = 1
  # turn: the cosine half carries the whole radius.
  bits = tf.constant([[0], [_ALL_ONES]], tf.uint64)
  x = float64_noise.gaussian_from_bits(bits, 1.0).numpy()
  assert x[0] == pytest.approx(math.sqrt(2 * 53 * math.log(2)), rel=1e-9)
  assert abs(x[1]) < 1e-9

"""Every privacy noise draw reaches past TF's 5.68-sigma clamp.

TF's normal samplers (`tf.random.normal`, `stateless_normal`, in float32 and
float64) clamp their first uniform at 1e-7, so their noise never exceeds
sqrt(-2 ln 1e-7) = 5.68 sigma; an output beyond a neighbour's support is a
distinguishing event no epsilon covers. These tests pin that the central
queries, DP-FTRL's tree and example-level DP-SGD draw with
`tff_dp.mechanisms.float64_noise` instead: behaviourally for the queries
(TF's sampler made to fail while they run, and the law of their noise at 6
standard errors on 1e6 coordinates: each check flakes with probability about
2e-9), and by a scan of the sources for the rest.
"""

import math
import os
import re

import numpy as np
import tensorflow as tf

from tests.helpers import REPO_ROOT
from tff_dp.mechanisms import dp_queries
from tff_dp.mechanisms import float64_noise

_D = 1_000_000
# Not privacy noise: the auditor's canary directions only need to be random.
_ALLOWED = {os.path.join('tff_dp', 'mechanisms', 'canaries.py')}


def _refuse_tf_normal(monkeypatch):

  def refuse(*args, **kwargs):
    raise AssertionError('TF normal sampler used for privacy noise')

  monkeypatch.setattr(tf.random, 'stateless_normal', refuse)
  monkeypatch.setattr(tf.random, 'normal', refuse)


def _assert_gaussian(x, stddev):
  x = np.asarray(x, np.float64).reshape(-1)
  assert abs(np.mean(x)) < 6 * stddev / math.sqrt(x.size)
  # The sample std's relative SE for a Gaussian: sqrt(2 / (4 d)).
  assert abs(np.std(x) / stddev - 1) < 6 * math.sqrt(2 / (4 * x.size))


def test_central_query_noise_is_float64_box_muller(monkeypatch):
  _refuse_tf_normal(monkeypatch)
  query = dp_queries.SecretGaussianSumQuery(1.0, 0.7, noise_key=(5, 9))
  template = [tf.zeros([_D], tf.float32)]
  result, _, _ = query.get_noised_result(query.initial_sample_state(template),
                                         query.initial_global_state())
  assert result[0].dtype == tf.float32
  _assert_gaussian(result[0].numpy(), 0.7)


def test_tree_noise_is_float64_box_muller(monkeypatch):
  _refuse_tf_normal(monkeypatch)
  specs = [tf.TensorSpec([_D // 2], tf.float32)] * 2
  generator = dp_queries._SecretTreeNoiseGenerator(  # pylint: disable=protected-access
      1.3, specs, noise_key=(2, 4))
  state = generator.initialize()
  noise, next_state = generator.next(state)
  assert [n.dtype for n in noise] == [tf.float32] * 2
  # Each tensor gets its own seed: the two halves are not the same draws.
  assert not np.array_equal(noise[0].numpy(), noise[1].numpy())
  _assert_gaussian(np.concatenate([n.numpy() for n in noise]), 1.3)
  # The state advances as TF Privacy's generator's does.
  np.testing.assert_array_equal(next_state.seeds.numpy(),
                                state.seeds.numpy() + len(specs))


def test_rounding_to_float32_keeps_the_tails():
  # The largest radius float64 Box-Muller reaches, u = 2^-53.
  bits = tf.constant([[0], [0]], tf.uint64)
  extreme = float64_noise.gaussian_from_bits(bits, tf.constant(1.0, tf.float64))
  rounded = tf.cast(extreme, tf.float32).numpy()
  assert np.max(np.abs(rounded)) > 8.5 > math.sqrt(-2 * math.log(1e-7))


def test_no_privacy_noise_comes_from_tfs_clamped_sampler():
  pattern = re.compile(r'tf\.random\.(stateless_)?normal\b|random_normal')
  offenders = []
  for root, _, files in os.walk(os.path.join(REPO_ROOT, 'tff_dp')):
    for name in files:
      path = os.path.join(root, name)
      relative = os.path.relpath(path, REPO_ROOT)
      if not name.endswith('.py') or relative in _ALLOWED:
        continue
      with open(path, encoding='utf-8') as f:
        code = [
            line for line in f
            if not line.lstrip().startswith('#') and pattern.search(line)
        ]
      offenders += [f'{relative}: {line.strip()}' for line in code]
  # Docstrings that name the sampler are prose, not calls.
  offenders = [o for o in offenders if '(' in o.split(': ', 1)[1]]
  assert not offenders, offenders

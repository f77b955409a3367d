"""The group's clients trained together (`grouped_vectorized`) against the loop.

The process-level zero-noise equivalence with TFF's reference is the
`[vectorized]` case of test_grouped_{fedavg,dp_ftrl,fedprox,local_dp,
weighting,nonprivate}.py (MLP groups built with `max_client_size`, slow tier;
their default-tier cases run the program's while loop); these tests compare
the group's TF function itself, in process, on groups with partial batches,
clients with fewer batches, an empty client and padding slots.

The program never runs this path (the module docstring says why), so only
the configuration rule (pure Python) and the probe's fallback are in the
default tier; the traced comparisons are in the slow tier.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
import tensorflow_privacy as tfp

from tests.helpers import grouped
from tff_dp.algorithms import grouped_client_work
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_model
from tff_dp.algorithms import grouped_vectorized
from tff_dp.algorithms import models
from tff_dp.algorithms.grouped_client_options import ClientOptions
from tff_dp.algorithms.grouped_example_dp import ExampleDp
from tff_dp.config import ModelKind
from tff_dp.data.labels import LabelKind

_D, _C = 6, 3
# Batch 3 over 2 epochs: 5 examples give 4 batches (the last partial), 0 give
# none, 1 gives 1 partial batch.
_SIZES = (5, 0, 1, 4, 2)
_BATCH, _EPOCHS = 3, 2
_MAX_BATCHES = grouped_client_work.unrolled_batches(max(_SIZES),
                                                    epochs=_EPOCHS,
                                                    batch_size=_BATCH)


def _model(kind=ModelKind.MLP, input_dim=_D):
  image_shape = (8, 8, 1) if kind is ModelKind.CNN else None
  return grouped_model.functional_model(
      lambda: models.build_keras_model(kind,
                                       input_dim=input_dim,
                                       num_classes=_C,
                                       hidden_units=4,
                                       seed=3,
                                       image_shape=image_shape),
      input_dim=input_dim,
      num_classes=_C,
      label_kind=LabelKind.SINGLE)


def test_supported_is_decided_by_the_configuration():
  assert grouped_vectorized.supported(ClientOptions(), max_batches=4)
  assert grouped_vectorized.supported(ClientOptions(proximal_strength=0.1),
                                      max_batches=4)
  assert not grouped_vectorized.supported(ClientOptions(), max_batches=None)
  assert not grouped_vectorized.supported(ClientOptions(full_gradient=True),
                                          max_batches=4)
  assert not grouped_vectorized.supported(
      ClientOptions(label_kind=LabelKind.NEXT_TOKENS), max_batches=4)
  # Only its presence matters here.
  example_dp = ExampleDp(settings=None, noise_key=(0, 0))
  assert not grouped_vectorized.supported(ClientOptions(example_dp=example_dp),
                                          max_batches=4)


# ~3-10 s; in the default tier, test_grouped_fedavg's CNN equivalence fails
# if the CNN is vectorized (the slow tier's `[vectorized]` cases if the MLP
# is not).
@pytest.mark.slow
def test_vectorizes_the_mlp_not_the_cnn():
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  kwargs = dict(batch_size=_BATCH, max_batches=3, options=ClientOptions())
  assert grouped_vectorized.vectorizes(_model(),
                                       optimizer,
                                       input_dim=_D,
                                       **kwargs)
  # Conv2D's filters must be loop invariant in pfor; a client's are not.
  assert not grouped_vectorized.vectorizes(
      _model(ModelKind.CNN, 64), optimizer, input_dim=64, **kwargs)


def test_any_error_of_pfor_keeps_the_loop(monkeypatch):
  """pfor fails with more than ValueError (module docstring of `vectorizes`):
  the probe answers False, and restores TF's log level."""

  def fails(*args, **kwargs):
    del args, kwargs
    raise TypeError('`dtype` <dtype: \'variant\'> is not compatible with 0 '
                    'of dtype int64.')

  monkeypatch.setattr(grouped_vectorized.tf, 'vectorized_map', fails)
  level = tf.get_logger().level
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.1)
  assert not grouped_vectorized.vectorizes(_model(),
                                           optimizer,
                                           input_dim=_D,
                                           batch_size=_BATCH,
                                           max_batches=3,
                                           options=ClientOptions())
  assert tf.get_logger().level == level


# ~15 s at load 5 (pfor's conversion of an LSTM step): what the fallback is
# for; the default tier raises pfor's error by hand (above).
@pytest.mark.slow
def test_the_rnn_keeps_the_loop():
  """pfor raises a TypeError on the LSTM (not a ValueError): the loop."""
  model = grouped_model.functional_model(
      lambda: models.build_keras_model(ModelKind.RNN,
                                       input_dim=5,
                                       num_classes=7,
                                       hidden_units=4,
                                       seed=3,
                                       vocab_size=7),
      input_dim=5,
      num_classes=7,
      label_kind=LabelKind.SINGLE)
  assert not grouped_vectorized.vectorizes(
      model,
      tff.learning.optimizers.build_sgdm(learning_rate=0.1),
      input_dim=5,
      batch_size=3,
      max_batches=2,
      options=ClientOptions())


def _group(pad):
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(n, _D)).astype(np.float32) for n in _SIZES]
  ys = [rng.integers(0, _C, size=n).astype(np.int32) for n in _SIZES]
  group = grouped_data.make_groups(xs,
                                   ys,
                                   list(range(len(_SIZES))),
                                   round_num=1,
                                   seed=2,
                                   epochs=_EPOCHS,
                                   group_size=len(_SIZES) + pad,
                                   pad_to_group_size=bool(pad))[0]
  return collections.OrderedDict((k, tf.constant(v)) for k, v in group.items())


def _run(monkeypatch, vectorized, *, momentum, proximal, clip):
  calls = []
  real = grouped_vectorized.train_clients

  def counted(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(grouped_vectorized, 'train_clients', counted)
  if not vectorized:
    monkeypatch.setattr(grouped_vectorized, 'supported', lambda *a, **k: False)
  model = _model()
  optimizer = tff.learning.optimizers.build_sgdm(learning_rate=0.5,
                                                 momentum=momentum)
  query = tfp.GaussianSumQuery(l2_norm_clip=clip, stddev=0.0)
  group_fn = grouped_client_work.build_group_fn(
      model,
      optimizer,
      query,
      input_dim=_D,
      batch_size=_BATCH,
      epochs=_EPOCHS,
      max_norm=1e9,
      client_files_dir=None,
      max_batches=_MAX_BATCHES,
      options=ClientOptions(proximal_strength=proximal))
  weights, hparams, params = grouped.group_fn_arguments(model, optimizer, query)
  out = group_fn(hparams, weights, params, _group(pad=2))
  assert bool(calls) == vectorized
  return tf.nest.map_structure(np.asarray, out)


# Two group functions traced, no TFF execution: ~27 s each at load 10
# (2 cores), 6.3 s at load 2. Slow tier: a path the program never takes.
@pytest.mark.slow
@pytest.mark.parametrize('momentum, proximal, clip', [(None, 0.0, 0.05),
                                                      (0.9, 0.0, 0.05),
                                                      (None, 0.2, 1e6)],
                         ids=['sgd-clipped', 'momentum-clipped', 'proximal'])
def test_vectorized_group_equals_the_loop(monkeypatch, momentum, proximal,
                                          clip):
  """Same records and metric sums as the loop, and the paths that ran."""
  with monkeypatch.context() as patch:
    loop = _run(patch, False, momentum=momentum, proximal=proximal, clip=clip)
  with monkeypatch.context() as patch:
    vectorized = _run(patch,
                      True,
                      momentum=momentum,
                      proximal=proximal,
                      clip=clip)
  (loop_records, loop_metrics), (records, metrics) = loop, vectorized
  for a, b in zip(loop_records, records):
    # Partial batches: a masked sum over the full batch, rescaled.
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
  assert metrics['num_examples'] == loop_metrics['num_examples'] == (
      _EPOCHS * sum(_SIZES))
  assert metrics['num_batches'] == loop_metrics['num_batches']
  assert metrics['correct'] == loop_metrics['correct']
  np.testing.assert_allclose(metrics['loss_sum'],
                             loop_metrics['loss_sum'],
                             rtol=1e-5)

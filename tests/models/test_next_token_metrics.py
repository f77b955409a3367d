"""The transformer's loss and accuracy on next-token labels, against numpy.

The loss averages the cross-entropy over the positions whose label is not
padding; the accuracy counts only labels that are real tokens (not padding,
oov, bos or eos: the last three ids), as TFF's masked accuracy does.
"""

import numpy as np
import tensorflow as tf

from tff_dp.algorithms import models
from tff_dp.data.labels import LabelKind

_V = 9  # ids: 0 pad, 1..5 tokens, 6 oov, 7 bos, 8 eos


def _case():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, _V)).astype(np.float32)
  labels = np.array([[0, 0, 3, 8], [7, 1, 2, 6], [4, 5, 5, 1]], np.int32)
  return logits, labels


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_loss_is_the_mean_cross_entropy_over_non_padding_labels():
  logits, labels = _case()
  nll = -np.take_along_axis(_log_softmax(logits), labels[..., None], -1)[..., 0]
  expected = nll[labels != 0].mean()
  loss = models.loss_fn(label_kind=LabelKind.NEXT_TOKENS)
  np.testing.assert_allclose(loss(labels, logits).numpy(), expected, rtol=1e-5)


def test_loss_per_window_without_reduction():
  logits, labels = _case()
  nll = -np.take_along_axis(_log_softmax(logits), labels[..., None], -1)[..., 0]
  loss = models.loss_fn(label_kind=LabelKind.NEXT_TOKENS)
  loss.reduction = tf.keras.losses.Reduction.NONE
  expected = [nll[k][labels[k] != 0].mean() for k in range(3)]
  np.testing.assert_allclose(loss(labels, logits).numpy(), expected, rtol=1e-5)


def test_accuracy_counts_real_tokens_only():
  logits, labels = _case()
  predicted = logits.argmax(-1)
  real = (labels > 0) & (labels < _V - 3)
  expected = (predicted == labels)[real].mean()
  (metric,) = models.metrics(label_kind=LabelKind.NEXT_TOKENS)
  metric.update_state(labels, logits)
  np.testing.assert_allclose(metric.result().numpy(), expected, rtol=1e-6)
  # The mask matters here: counting every label gives another number.
  assert not np.isclose((predicted == labels).mean(), expected)


def test_input_spec_of_next_token_labels():
  _, label_spec = models.input_spec(4, label_kind=LabelKind.NEXT_TOKENS)
  assert label_spec.shape.as_list() == [None, 4]
  assert label_spec.dtype == tf.int32

"""Server-side evaluation of the global model on the held-out test set.

The test set never belongs to a client, so its metrics are computed from public
(server) data and the model, itself a DP release: they are safe to release in a
DP run. Which metrics depends on the data's label kind (`tff_dp.data.labels`):
accuracy, or precision and recall@5 for multi-label data.
"""

from typing import Optional, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.data import labels
from tff_dp.data.labels import LabelKind

# Evaluation batches only bound memory: the metrics do not depend on them.
EVAL_BATCH_SIZE = 1024


class ServerEvaluator:
  """Evaluates `tff.learning.models.ModelWeights` with a Keras twin model."""

  def __init__(self,
               kind: ModelKind,
               *,
               input_dim: int,
               num_classes: int,
               hidden_units: int,
               hidden_layers: int,
               test_data: tf.data.Dataset,
               image_shape: Optional[Sequence[int]] = None,
               vocab_size: Optional[int] = None,
               embedding_dim: int = 8,
               label_kind: LabelKind = LabelKind.SINGLE,
               keras_model_fn=None):
    """Builds the twin of `kind` (or `keras_model_fn()`, a caller's own
    model from the Python API) and batches the test set once."""
    self._label_kind = label_kind
    if keras_model_fn is not None:
      self._model = keras_model_fn()
    else:
      self._model = models.build_keras_model(kind,
                                             input_dim=input_dim,
                                             num_classes=num_classes,
                                             hidden_units=hidden_units,
                                             hidden_layers=hidden_layers,
                                             seed=0,
                                             image_shape=image_shape,
                                             vocab_size=vocab_size,
                                             embedding_dim=embedding_dim)
    self._model.compile(loss=models.loss_fn(label_kind=label_kind),
                        metrics=models.metrics(label_kind=label_kind))
    # Batched and cached once: every round evaluates the same examples.
    self._data = test_data.batch(EVAL_BATCH_SIZE).cache()

  def __call__(self,
               weights: tff.learning.models.ModelWeights) -> dict[str, float]:
    """Returns {'loss', and the label kind's metrics} of `weights`."""
    weights.assign_weights_to(self._model)
    values = self._model.evaluate(self._data, verbose=0, return_dict=True)
    return {
        'loss': float(values['loss']),
        **labels.released_metrics(values, label_kind=self._label_kind)
    }

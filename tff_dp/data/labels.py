"""What a data source's labels are, and the metrics that follow from it.

Every data source declares its `label_kind`, as it declares `image_shape` and
`vocab_size` (see `tff_dp.data.loading`):

* `LabelKind.SINGLE`: one class per example, an int32 id in
  [0, num_classes). The model's logits go through a softmax; the loss is the
  categorical cross-entropy and the metric is accuracy. Every dataset but
  one.
* `LabelKind.MULTI_HOT`: any number of the num_classes labels per example,
  a float32 [num_classes] vector of 0/1. Each logit goes through its own
  sigmoid; the loss is the binary cross-entropy averaged over the labels,
  and the metrics are those of TFF's Stack Overflow tag prediction baseline
  (`tff.simulation.baselines.stackoverflow.create_tag_prediction_task`;
  Reddi et al. 2021, "Adaptive Federated Optimization", ICLR): precision at
  probability 0.5 and recall of the 5 most probable labels. Stack Overflow
  tags (`--dataset=stackoverflow_tag`).
* `LabelKind.NEXT_TOKENS`: a window of W token ids labelled with the W ids
  that follow each of them, int32 [W] (the window shifted by one), what a
  causal language model (`--model=transformer`) predicts at every position.
  The loss is the categorical cross-entropy averaged over the positions whose
  label is not padding; accuracy, as TFF's baselines' masked accuracy
  (`tff.simulation.baselines.keras_metrics.MaskedCategoricalAccuracy`), counts
  only labels that are real tokens: not padding, out-of-vocabulary, beginning
  or end of a record. Token data give these labels when the model asks for
  them (`tff_dp.data.registry.LoadRequest.next_token_labels`).

The model (`tff_dp.algorithms.models`) builds the loss and the Keras metrics from the
kind; the evaluations, the round values and the summary release the metrics
under the names below (`released_metrics`). Pure Python: the program checks
its configuration before it imports TensorFlow.
"""

import enum
from typing import Any, Mapping


class LabelKind(enum.Enum):
  """What one example's label is (see the module docstring)."""
  SINGLE = 'single'
  MULTI_HOT = 'multi_hot'
  NEXT_TOKENS = 'next_tokens'


# The model's metrics besides the loss, by label kind, as (released name,
# the name under which Keras and TFF report the metric). The first is the
# headline metric: the one the program prints each round and at the end.
# Multi-label: TFF's names; recall@5 is the metric Reddi et al. report.
METRICS = {
    LabelKind.SINGLE: (('accuracy', 'sparse_categorical_accuracy'),),
    LabelKind.MULTI_HOT: (
        ('recall_at_5', 'recall_at_5'), ('precision', 'precision')),
    LabelKind.NEXT_TOKENS: (('accuracy', 'next_token_accuracy'),),
}


def metric_names(kind: LabelKind) -> tuple[str, ...]:
  """Released names of the metrics of `kind`, the headline first."""
  return tuple(released for released, _ in METRICS[LabelKind(kind)])


def headline_metric(kind: LabelKind) -> str:
  """Released name of the metric the program reports for `kind`."""
  return metric_names(kind)[0]


def released_metrics(values: Mapping[str, Any], *,
                     label_kind: LabelKind) -> dict[str, float]:
  """The metrics of `label_kind` in `values`, under their released names.

  Args:
    values: Metrics as Keras or TFF report them (e.g. {'loss': ...,
      'sparse_categorical_accuracy': ...}); other entries are ignored.
    label_kind: Which metrics the model has.

  Returns:
    {released name: float value}, in `metric_names` order.

  Raises:
    KeyError: If one of the metrics is missing from `values`.
  """
  return {
      released: float(values[reported])
      for released, reported in METRICS[LabelKind(label_kind)]
  }

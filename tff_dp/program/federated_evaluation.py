"""Federated evaluation of the global model over held-out clients.

The alternative to `tff_dp.program.evaluation` (`--evaluation=federated`): instead of
the server's held-out test set, the model is evaluated where the data is, by
TFF's `tff.learning.algorithms.build_fed_eval`: each held-out client computes
the model's metrics on its own examples, and the server sums them and
finalizes, so loss and the other metrics (accuracy, or precision and
recall@5 for multi-label data, `tff_dp.data.labels`) are example-weighted
over all held-out examples.

Which clients are held out is decided by `tff_dp.data.held_out`: they never
train and are not in the population N of the accounting.

PRIVACY: these metrics are computed from client data without noise. In a DP
run they are NOT covered by the guarantee (nor are the held-out clients
protected by it): they are released only with `--release_nonprivate_metrics`
and only under the `nonprivate/` prefix (`tff_dp.program.release.FED_EVAL_PREFIX`).
"""

from typing import Callable, Sequence

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import learning_process
from tff_dp.data import labels
from tff_dp.data.held_out import HeldOutClients
from tff_dp.data.labels import LabelKind
from tff_dp.program import client_data
from tff_dp.program import evaluation


def build_federated_evaluation(
    model_fn: Callable[[], tff.learning.models.VariableModel],
) -> tff.learning.templates.LearningProcess:
  """Returns TFF's federated evaluation process for `model_fn`'s model.

  Args:
    model_fn: The no-argument model constructor of the training process, so
      that the evaluation's model weights have the training's type.

  Returns:
    `tff.learning.algorithms.build_fed_eval(model_fn)`: `initialize`,
    `set_model_weights(state, weights)`, and `next(state, client datasets)`
    whose metrics hold
    `['client_work']['eval']['current_round_metrics']`.
  """
  # The loop the training process uses: the same metrics, without TFF's
  # slower default dataset reduce.
  return tff.learning.algorithms.build_fed_eval(
      model_fn, loop_implementation=learning_process.LOOP)


def held_out_datasets(
    held_out: HeldOutClients,
    *,
    batch_size: int = evaluation.EVAL_BATCH_SIZE) -> list[tf.data.Dataset]:
  """The held-out clients' examples, one batched dataset per client.

  Args:
    held_out: From `tff_dp.data.held_out.hold_out_clients`.
    batch_size: Evaluation batch size (bounds memory; the metrics do not
      depend on it).
  """
  return [
      client_data.client_dataset_for(held_out.source, i).batch(batch_size)
      for i in held_out.indices
  ]


class FederatedEvaluator:
  """Evaluates `tff.learning.models.ModelWeights` over held-out clients.

  Called like `tff_dp.program.evaluation.ServerEvaluator`: weights -> metrics. Must
  be called inside a TFF execution context (the run's runtime).
  """

  def __init__(self,
               process: tff.learning.templates.LearningProcess,
               datasets: Sequence[tf.data.Dataset],
               *,
               label_kind: LabelKind = LabelKind.SINGLE):
    """Initializes the evaluator.

    Args:
      process: From `build_federated_evaluation`.
      datasets: The held-out clients' batched datasets (from
        `held_out_datasets`), built once and evaluated every time.
      label_kind: The data's labels, hence the model's metrics.
    """
    if not datasets:
      raise ValueError('federated evaluation needs at least one client')
    self._process = process
    self._datasets = list(datasets)
    self._label_kind = label_kind
    # Initialized on first use, inside the caller's execution context.
    self._initial_state = None

  def __call__(self,
               weights: tff.learning.models.ModelWeights) -> dict[str, float]:
    """Returns {'loss', the label kind's metrics, 'num_examples'}.

    Loss and metrics are example-weighted over all held-out examples.
    """
    if self._initial_state is None:
      self._initial_state = self._process.initialize()
    # Always from the initial state: the process also accumulates metrics
    # over its calls, and an evaluation must not depend on earlier ones (a
    # resumed run evaluates exactly as an uninterrupted one).
    state = self._process.set_model_weights(self._initial_state, weights)
    output = self._process.next(state, self._datasets)
    metrics = output.metrics['client_work']['eval']['current_round_metrics']
    return {
        'loss':
            float(metrics['loss']),
        **labels.released_metrics(metrics, label_kind=self._label_kind),
        'num_examples':
            float(metrics['num_examples']),
    }


def build_federated_evaluator(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    held_out: HeldOutClients,
    *,
    label_kind: LabelKind = LabelKind.SINGLE) -> FederatedEvaluator:
  """The evaluator of `--evaluation=federated` for `model_fn`'s model.

  Args:
    model_fn: The training process's model constructor.
    held_out: The clients to evaluate on.
    label_kind: The data's labels (`model_fn`'s), hence the metrics.
  """
  return FederatedEvaluator(build_federated_evaluation(model_fn),
                            held_out_datasets(held_out),
                            label_kind=label_kind)

"""What a training run releases each round besides its mechanism's values.

The evaluation's key prefix (`eval/` only for a public test set, else under
`nonprivate/`) and whether a DP run evaluates at all; the non-private round
values a user asked for (--release_nonprivate_metrics: cohort size, round
time, training metrics, which depend on client data without noise); and the
evaluator of --evaluation. `tff_dp.program.release` holds the allow-list
these keys are checked against.
"""

from typing import Optional

from tff_dp import config as config_lib
from tff_dp.config import TrainConfig
from tff_dp.data import labels
from tff_dp.data import loading
from tff_dp.data.held_out import HeldOutClients
from tff_dp.program import assembly
from tff_dp.program import client_data
from tff_dp.program import evaluation
from tff_dp.program import federated_evaluation
from tff_dp.program import release as release_lib


def round_values_fn(config: TrainConfig, *, release_nonprivate: bool,
                    label_kind: labels.LabelKind):
  """Returns (output, cohort, seconds) -> the round's non-eval values."""

  def round_values(output, cohort, seconds) -> dict[str, float]:
    values = {'cohort/expected_size': float(config.clients_per_round)}
    values.update(config.mechanism.round_values(config.dp_settings, output))
    if release_nonprivate:
      values['nonprivate/cohort_size'] = float(len(cohort))
      values['nonprivate/round_seconds'] = seconds
      # Empty where noise is added at the clients: their metrics never reach
      # the server (`learning_process.no_client_metrics`).
      train = output.metrics['client_work']['train']
      if train:
        values['nonprivate/train_loss'] = float(train['loss'])
        for name, value in labels.released_metrics(
            train, label_kind=label_kind).items():
          values[f'nonprivate/train_{name}'] = value
        values['nonprivate/train_examples'] = float(train['num_examples'])
    return values

  return round_values


def eval_prefix(config: TrainConfig) -> str:
  """Prefix of the released keys of `config`'s evaluation: `eval/` only for
  a public test set (`tff_dp.data.test_sets`), else under `nonprivate/`."""
  if config.evaluation is config_lib.Evaluation.FEDERATED:
    return release_lib.FED_EVAL_PREFIX
  if loading.test_set_origin(config.dataset).public:
    return release_lib.EVAL_PREFIX
  return release_lib.PRIVATE_EVAL_PREFIX


def evaluation_released(config: TrainConfig) -> bool:
  """Whether the run evaluates at all: in a DP run, evaluation outside the
  guarantee only on request (--release_nonprivate_metrics)."""
  covered = eval_prefix(config) == release_lib.EVAL_PREFIX
  return (covered or not config.private or config.release_nonprivate_metrics)


def build_evaluator(config: TrainConfig, data,
                    held_out: Optional[HeldOutClients], keras_model_fn):
  """Model weights -> metrics, for `config.evaluation`."""
  if config.evaluation is config_lib.Evaluation.FEDERATED:
    return federated_evaluation.build_federated_evaluator(
        assembly.build_model_fn(config, data, keras_model_fn),
        held_out,
        label_kind=data.label_kind)
  return evaluation.ServerEvaluator(
      config.model,
      # The very model trained (the transformer's sizes included).
      keras_model_fn=assembly.build_keras_model_fn(config, data,
                                                   keras_model_fn),
      input_dim=data.input_dim,
      num_classes=data.num_classes,
      hidden_units=config.hidden_units,
      hidden_layers=config.hidden_layers,
      image_shape=data.image_shape,
      vocab_size=data.vocab_size,
      embedding_dim=config.embedding_dim,
      label_kind=data.label_kind,
      test_data=client_data.test_dataset_for(data))

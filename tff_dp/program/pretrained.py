"""Central pretraining on public clients, and private runs that start from it.

Public pretraining then private fine-tuning is how production DP federated
language models are trained (Xu et al. 2023, "Federated Learning of Gboard
Language Models with Differential Privacy", ACL Industry): `./run.sh
pretrain` (`tff_dp.cli.pretrain`) trains the run's model CENTRALLY, without
noise, on the clients declared public (`public_examples()`: python_stdlib's
public modules, or the clients of `--public_clients` / `--public_fraction`,
`tff_dp.data.public_clients`; they never join the private population), and
writes a checkpoint directory:

* `weights.h5`: the Keras weights (HDF5, no pickle);
* `pretrained.json`: the model's signature (kind, input size, classes,
  vocabulary, its size flags), the dataset, the public clients used and the
  rule that made them public, the data's fingerprint, the training settings
  and the SHA-256 of `weights.h5`.

`./run.sh train --init_from=DIR` starts from those weights instead of the
seeded initial model. It refuses, with one line naming the difference, a
checkpoint whose model signature differs from the run's, whose dataset
differs, that was pretrained on a client this run's population holds, or
whose weights file does not match its hash. The privacy
statement then names the data that was treated as public: the guarantee
covers the private population only, and says nothing of the public clients.
"""

import json
import os
from typing import Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_dp import atomic_io
from tff_dp.algorithms import models
from tff_dp.config import TrainConfig
from tff_dp.models import trainable as trainable_lib
from tff_dp.program import assembly
from tff_dp.program import pretrained_meta


def pretrain(config: TrainConfig, data: Any, *, steps: int, batch_size: int,
             learning_rate: float) -> tuple[tf.keras.Model, dict[str, float]]:
  """Trains `config`'s model centrally on `data`'s public clients.

  Adam (Kingma and Ba 2015) over shuffled batches of the public examples,
  shuffled from `config.seed` (public data: nothing to hide).

  Returns:
    (the trained Keras model, its final {'loss', metrics} on the last 10%
    of steps' batches as Keras reports them).
  """
  x, y = pretrained_meta.public_examples(config, data)
  # The whole model, whatever --trainable the private run will use.
  model = assembly.base_keras_model_fn(config, data)()
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate),
                loss=models.loss_fn(label_kind=data.label_kind),
                metrics=models.metrics(label_kind=data.label_kind))
  batches = tf.data.Dataset.from_tensor_slices(
      (x, y)).shuffle(len(x), seed=config.seed,
                      reshuffle_each_iteration=True).repeat().batch(batch_size)
  history = model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
  return model, {k: float(v[-1]) for k, v in history.history.items()}


def save(output_dir: str, model: tf.keras.Model, *, config: TrainConfig,
         data: Any, training: dict[str, Any]) -> str:
  """Writes the checkpoint directory (module docstring); returns its
  `pretrained.json` path."""
  os.makedirs(output_dir, exist_ok=True)
  weights_path = os.path.join(output_dir, pretrained_meta.WEIGHTS_FILE)
  model.save_weights(weights_path)
  fingerprint = getattr(data, 'fingerprint', None)
  meta = {
      'format': pretrained_meta.FORMAT,
      'model': pretrained_meta.model_signature(config, data),
      'dataset': config.dataset.value,
      'public_clients': list(data.public_client_ids),
      'public_rule': getattr(data, 'public_rule', ''),
      'data_fingerprint': fingerprint() if callable(fingerprint) else None,
      'training': training,
      'weights_sha256': pretrained_meta.file_sha256(weights_path),
  }
  meta_path = os.path.join(output_dir, pretrained_meta.META_FILE)
  atomic_io.write_text_atomic(meta_path, json.dumps(meta, indent=2) + '\n')
  return meta_path


def load_weights(checkpoint_dir: str, config: TrainConfig,
                 data: Any) -> tff.learning.models.ModelWeights:
  """The checkpoint's weights as the run's model weights.

  Raises:
    ConfigError: For a checkpoint that is unreadable, altered, or of another
      model or dataset (one line naming the difference).
  """
  pretrained_meta.check_checkpoint(checkpoint_dir, config, data)
  base = assembly.base_keras_model_fn(config, data)()
  base.load_weights(os.path.join(checkpoint_dir, pretrained_meta.WEIGHTS_FILE))
  model = base
  if assembly.freezes(config):
    # Saved from the whole model: adapters and frozen layers take its values.
    model = assembly.build_keras_model_fn(config, data)()
    trainable_lib.copy_base_weights(base, model)
  return tff.learning.models.ModelWeights(
      trainable=[v.numpy() for v in model.trainable_variables],
      non_trainable=[v.numpy() for v in model.non_trainable_variables])


def frozen_weights(config: TrainConfig, data: Any) -> Optional[list]:
  """The frozen weights of `config.init_from` for a run that trains only
  some parameters (the constants of the process's client computation,
  `tff_dp.algorithms.grouped_frozen`), else None: public pretrained
  weights, never a function of the private clients' data."""
  if not config.init_from or not assembly.freezes(config):
    return None
  return list(load_weights(config.init_from, config, data).non_trainable)


def initial_state(process, state, config: TrainConfig, data: Any):
  """`state` with the model of `config.init_from`, if any."""
  if not config.init_from:
    return state
  return process.set_model_weights(state,
                                   load_weights(config.init_from, config, data))

"""Which of a Keras model's parameters clients train (`--trainable`).

Under user-level DP the noise is drawn in the dimension of what is trained:
every trained parameter gets Gaussian noise of std z*C/m, while the clipped
signal has norm at most C whatever the dimension, so training fewer
parameters (adapters, the last layers) is often better at the same epsilon
(e.g. FFA-LoRA, Sun et al. 2024, arXiv 2403.12313; public pretraining then
private fine-tuning, Xu et al. 2023, "Federated Learning of Gboard Language
Models with Differential Privacy").

`configure` freezes everything else, as NON-trainable Keras variables: TFF's
Keras wrapper (`tff.learning.models.from_keras_model`) then puts them in
`ModelWeights.non_trainable`, and TFF's client work sends, and its aggregator
(clipping, noise, the DP event) receives, the trainable tensors only. The
frozen ones are still part of the server state and of what TFF's processes
broadcast each round; the grouped path broadcasts the trainable ones only
(`tff_dp.program.model_size` reports both directions).

Selections (`tff_dp.config.Trainable`):
  all       every parameter (the model as built);
  lora      `tff_dp.models.lora` adapters on every Dense layer, nothing else;
  ffa_lora  the same with A frozen (only B trains);
  head      the output layer: `lm_head`, else the model's last Dense layer;
  last_k    the last k blocks, `final_ln` and the head. A transformer's
            blocks are its `block{i}_*` layers; in a model without such
            names each layer with weights below the head is one block (the
            MLP's hidden layers, the rnn's embedding and LSTM layers).

The grouped path (`tff_dp.algorithms.grouped_fedavg`) trains a functional
model; TFF's decides trainability when a variable is created, not from a
Keras layer's `trainable` flag set later, so the grouped path builds its own
from the configured model's variable lists (`tff_dp.algorithms.
grouped_model`).
"""

import dataclasses
import re
from typing import Optional

import tensorflow as tf

from tff_dp.config import Trainable
from tff_dp.models import lora

HEAD_NAME = 'lm_head'
FINAL_NORM_NAME = 'final_ln'
_BLOCK = re.compile(r'^block(\d+)_')


@dataclasses.dataclass(frozen=True)
class TrainableSettings:
  """`--trainable` and its parameters."""
  trainable: Trainable = Trainable.ALL
  lora_rank: int = 8
  lora_alpha: float = 8.0
  last_k: int = 1
  # Seed of the adapters' A (the run's model seed).
  seed: int = 0

  @property
  def uses_lora(self) -> bool:
    return self.trainable in (Trainable.LORA, Trainable.FFA_LORA)


def head_layer(model: tf.keras.Model) -> tf.keras.layers.Layer:
  """The output layer: `lm_head` if the model has one, else its last Dense.

  Raises:
    ValueError: If it has neither.
  """
  named = [
      layer for layer in lora.leaf_layers(model) if layer.name == HEAD_NAME
  ]
  if named:
    return named[0]
  dense = [
      layer for layer in lora.leaf_layers(model)
      if isinstance(layer, (tf.keras.layers.Dense, lora.LoraDense))
  ]
  if not dense:
    raise ValueError(f'the model {model.name!r} has no {HEAD_NAME!r} layer '
                     'and no Dense layer to train as its head')
  return dense[-1]


def blocks(model: tf.keras.Model) -> list[list[tf.keras.layers.Layer]]:
  """The model's blocks, first to last (module docstring)."""
  numbered: dict[int, list[tf.keras.layers.Layer]] = {}
  for layer in lora.leaf_layers(model):
    match = _BLOCK.match(layer.name)
    if match:
      numbered.setdefault(int(match.group(1)), []).append(layer)
  if numbered:
    return [numbered[i] for i in sorted(numbered)]
  head = head_layer(model)
  return [[layer]
          for layer in lora.leaf_layers(model)
          if layer.weights and layer is not head]


def _trained_layers(model: tf.keras.Model,
                    settings: TrainableSettings) -> list[tf.keras.layers.Layer]:
  """The layers `settings` keeps trainable (all their weights train)."""
  head = head_layer(model)
  if settings.trainable is Trainable.HEAD:
    return [head]
  if settings.trainable is Trainable.LAST_K:
    found = blocks(model)
    if settings.last_k > len(found):
      raise ValueError(f'--trainable_last_k={settings.last_k}: the model has '
                       f'{len(found)} blocks')
    chosen = [
        layer for block in found[len(found) - settings.last_k:]
        for layer in block
    ]
    return chosen + [
        layer for layer in lora.leaf_layers(model)
        if layer.name == FINAL_NORM_NAME
    ] + [head]
  raise ValueError(f'no layer selection for {settings.trainable!r}')


def configure(model: tf.keras.Model,
              settings: TrainableSettings,
              *,
              has_adapters: bool = False) -> tf.keras.Model:
  """Returns `model` with only `settings`' parameters trainable.

  Call it inside TFF's model constructor on a freshly built model (LoRA
  rebuilds Dense layers from their initializers: `lora.add_adapters`).

  Args:
    model: An uncompiled Keras model.
    settings: What to train.
    has_adapters: Whether the model was built with `lora.dense_factory`
      already (then LoRA adds none).

  Raises:
    ValueError: Naming what is wrong: LoRA on a model without Dense layers,
      a head or blocks that are not there, k above the number of blocks.
  """
  if settings.trainable is Trainable.ALL:
    return model
  if settings.uses_lora:
    if not has_adapters:
      model = lora.add_adapters(model,
                                rank=settings.lora_rank,
                                alpha=settings.lora_alpha,
                                seed=settings.seed,
                                freeze_a=settings.trainable
                                is Trainable.FFA_LORA)
    for layer in lora.leaf_layers(model):
      # A LoraDense's base weights are non-trainable variables already.
      if not isinstance(layer, lora.LoraDense):
        layer.trainable = False
    return model
  keep = {id(layer) for layer in _trained_layers(model, settings)}
  for layer in lora.leaf_layers(model):
    if id(layer) not in keep:
      layer.trainable = False
  return model


def copy_base_weights(source: tf.keras.Model, target: tf.keras.Model) -> None:
  """Assigns a model's weights to `configure`'s copy of the same architecture
  (eager): a `LoraDense` takes its Dense twin's kernel and bias (adapters
  unchanged), every other layer its twin's weights. For starting a LoRA run
  from weights saved from the plain model (`--init_from`).

  Raises:
    ValueError: If the two models' layers do not correspond.
  """
  sources, targets = lora.leaf_layers(source), lora.leaf_layers(target)
  if len(sources) != len(targets):
    raise ValueError(f'{len(sources)} layers cannot fill {len(targets)}')
  for twin, layer in zip(sources, targets):
    if isinstance(layer, lora.LoraDense):
      layer.kernel.assign(twin.kernel)
      if layer.use_bias:
        layer.bias.assign(twin.bias)
    else:
      layer.set_weights(twin.get_weights())


def settings_from(config, *, seed: Optional[int] = None) -> TrainableSettings:
  """The `TrainableSettings` of a `tff_dp.config.TrainConfig`."""
  return TrainableSettings(trainable=config.trainable,
                           lora_rank=config.lora_rank,
                           lora_alpha=config.lora_alpha,
                           last_k=config.trainable_last_k,
                           seed=config.seed if seed is None else seed)

"""What a run trains, noises and sends per client and round (`--trainable`).

Read from the learning process's types and its `next` computation (no
execution): the model weights' `trainable` part is what clients train, clip
and upload and what a central DP mechanism noises (the noise dimension); the
`non_trainable` part (`tff_dp.models.trainable`'s frozen parameters) is never
clipped, noised or aggregated. What each client DOWNLOADS per round is read
from the round's `federated_broadcast`s: TFF 0.87's FedAvg with its default
distributor broadcasts the server's whole `ModelWeights`, frozen tensors
included, every round (still so for example-level DP-SGD,
`tff_dp.algorithms.example_dp`); the grouped path and the reference's
FedAvg, FedProx, FedSGD and DP-FTRL (`tff_dp.algorithms.grouped_frozen`)
broadcast the trainable tensors only, the frozen ones being constants of the
client computation, shipped once (the one-time download). Only model tensors are
counted (the broadcast also carries a few scalars: the clients' optimizer
hyperparameters, the clip). These are public facts of the configuration
(shapes), not functions of client data.
"""

import dataclasses
from typing import Any

import numpy as np
import tensorflow_federated as tff

# Building blocks are TFF's internal representation; no public API lists a
# computation's intrinsics.
from tensorflow_federated.python.core.impl.compiler import building_blocks
from tensorflow_federated.python.core.impl.compiler import intrinsic_defs

# float32 on the wire.
_BYTES_PER_PARAMETER = 4


@dataclasses.dataclass(frozen=True)
class ModelSize:
  """Parameter counts of a process's model weights."""
  trainable: str  # --trainable
  trainable_parameters: int
  frozen_parameters: int
  # Whether each round's broadcast carries the frozen tensors (TFF's
  # default distributor) or they reach each client once (constants of the
  # client computation, `tff_dp.algorithms.grouped_frozen`).
  frozen_every_round: bool = True

  @property
  def noise_dimension(self) -> int:
    """Coordinates a central DP mechanism noises: the trainable ones."""
    return self.trainable_parameters

  @property
  def upload_bytes(self) -> int:
    """One client's update per round: its trainable tensors, float32."""
    return self.trainable_parameters * _BYTES_PER_PARAMETER

  @property
  def download_bytes(self) -> int:
    """The round's broadcast to one client: its model tensors, float32."""
    frozen = self.frozen_parameters if self.frozen_every_round else 0
    return (self.trainable_parameters + frozen) * _BYTES_PER_PARAMETER

  @property
  def one_time_download_bytes(self) -> int:
    """What one client receives once, with the client computation: the
    frozen tensors when the rounds do not broadcast them."""
    if self.frozen_every_round:
      return 0
    return self.frozen_parameters * _BYTES_PER_PARAMETER

  def to_json(self) -> dict[str, Any]:
    return {
        'trainable': self.trainable,
        'trainable_parameters': self.trainable_parameters,
        'frozen_parameters': self.frozen_parameters,
        'noise_dimension': self.noise_dimension,
        'upload_bytes_per_client_round': self.upload_bytes,
        'download_bytes_per_client_round': self.download_bytes,
        'frozen_sent': 'every round' if self.frozen_every_round else 'once',
        'one_time_download_bytes_per_client': self.one_time_download_bytes,
    }

  def console_line(self) -> str:
    """One line for the program's console."""
    total = self.trainable_parameters + self.frozen_parameters
    return (f'model: --trainable={self.trainable} trains '
            f'{self.trainable_parameters:,} of {total:,} parameters (noise '
            f'dimension {self.noise_dimension:,}); per client and round: '
            f'upload {self.upload_bytes:,} bytes, download '
            f'{self.download_bytes:,} bytes' + self._once_text())

  def _once_text(self) -> str:
    if self.frozen_every_round or not self.frozen_parameters:
      return ''
    return (f' (the frozen tensors, {self.one_time_download_bytes:,} bytes, '
            'once, with the client computation)')

  def statement_lines(self, *, noised: bool) -> list[str]:
    """The privacy statement's lines (`noised`: a central DP mechanism)."""
    total = self.trainable_parameters + self.frozen_parameters
    lines = [
        f'Trained parameters (--trainable={self.trainable}): '
        f'{self.trainable_parameters:,} of {total:,}; the other '
        f'{self.frozen_parameters:,} are frozen at their initial values: '
        'never clipped, noised, uploaded or aggregated.'
    ]
    if noised:
      lines.append(f'Noise dimension: {self.noise_dimension:,} (every '
                   'trained parameter, none of the frozen ones).')
    if self.frozen_every_round:
      sent = ('(TFF broadcasts the whole model, frozen tensors included, '
              'every round).')
    else:
      sent = ('(the trained tensors; the frozen ones, '
              f'{self.one_time_download_bytes:,} bytes, reach each client '
              'once, as constants of the client computation).')
    lines.append(
        f'Bytes each client exchanges in a round: upload {self.upload_bytes:,} bytes (the '
        f'trained tensors, float32); download {self.download_bytes:,} bytes ' +
        sent)
    return lines


def _count(struct_type) -> int:
  return int(
      sum(
          np.prod(leaf.shape, dtype=np.int64)
          for leaf in tff.structure.flatten(struct_type)))


def _broadcast_types(comp: tff.Computation) -> list[tff.Type]:
  """The value types of every `federated_broadcast` in `comp`."""
  found = []
  pending = [comp.to_building_block()]
  while pending:
    block = pending.pop()
    if (isinstance(block, building_blocks.Intrinsic) and
        block.uri == intrinsic_defs.FEDERATED_BROADCAST.uri):
      found.append(block.type_signature.result.member)
    pending.extend(block.children())
  return found


def _broadcast_parts(comp: tff.Computation,
                     weights_type: tff.Type) -> list[tff.Type]:
  """Every broadcast's value type and, inside a struct that is not the
  model's weights, its members: the grouped round broadcasts one struct
  (the clients' hyperparameters, the trainable tensors, the query's sample
  params; `tff_dp.algorithms.grouped_server`)."""
  found, pending = [], _broadcast_types(comp)
  while pending:
    value_type = pending.pop()
    found.append(value_type)
    if (isinstance(value_type, tff.StructType) and
        not value_type.is_equivalent_to(weights_type)):
      pending.extend(
          member for _, member in tff.structure.iter_elements(value_type))
  return found


def frozen_broadcast_each_round(process: Any) -> bool:
  """Whether `process.next` broadcasts the model's frozen tensors: True if
  one of its broadcasts is the whole `ModelWeights` (TFF's default
  distributor), False if only the trainable tensors are
  (`tff_dp.algorithms.grouped_frozen`, both paths)."""
  weights_type = process.get_model_weights.type_signature.result
  broadcasts = _broadcast_parts(process.next, weights_type)
  if any(t.is_equivalent_to(weights_type) for t in broadcasts):
    return True
  if any(t.is_equivalent_to(weights_type.trainable) for t in broadcasts):
    return False
  # Neither (a process of another shape): count the larger download.
  return True


def of_process(process: Any, *, trainable: str) -> ModelSize:
  """The `ModelSize` of a learning process (its `get_model_weights` and
  its round's broadcasts)."""
  weights_type = process.get_model_weights.type_signature.result
  frozen = _count(weights_type.non_trainable)
  return ModelSize(trainable=trainable,
                   trainable_parameters=_count(weights_type.trainable),
                   frozen_parameters=frozen,
                   frozen_every_round=(not frozen or
                                       frozen_broadcast_each_round(process)))

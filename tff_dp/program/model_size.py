"""What a run trains, noises and sends per client and round (`--trainable`).

Read from the learning process's type signature (no execution): the model
weights' `trainable` part is what clients train, clip and upload and what a
central DP mechanism noises (the noise dimension); the `non_trainable` part
(`tff_dp.models.trainable`'s frozen parameters) is never clipped, noised or
aggregated. TFF 0.87's FedAvg (`build_unweighted_fed_avg` and the weighted
one; DP-FTRL is built on it) and the grouped path broadcast the server's
whole `ModelWeights` to every client of every round, so the download counts
the frozen tensors too: they are not sent once and cached. These are public
facts of the configuration (shapes), not functions of client data.
"""

import dataclasses
from typing import Any

import numpy as np
import tensorflow_federated as tff

# float32 on the wire.
_BYTES_PER_PARAMETER = 4


@dataclasses.dataclass(frozen=True)
class ModelSize:
  """Parameter counts of a process's model weights."""
  trainable: str  # --trainable
  trainable_parameters: int
  frozen_parameters: int

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
    """TFF's broadcast to one client per round: every tensor, float32."""
    return (self.trainable_parameters +
            self.frozen_parameters) * _BYTES_PER_PARAMETER

  def to_json(self) -> dict[str, Any]:
    return {
        'trainable': self.trainable,
        'trainable_parameters': self.trainable_parameters,
        'frozen_parameters': self.frozen_parameters,
        'noise_dimension': self.noise_dimension,
        'upload_bytes_per_client_round': self.upload_bytes,
        'download_bytes_per_client_round': self.download_bytes,
    }

  def console_line(self) -> str:
    """One line for the program's console."""
    total = self.trainable_parameters + self.frozen_parameters
    return (f'model: --trainable={self.trainable} trains '
            f'{self.trainable_parameters:,} of {total:,} parameters (noise '
            f'dimension {self.noise_dimension:,}); per client and round: '
            f'upload {self.upload_bytes:,} bytes, download '
            f'{self.download_bytes:,} bytes')

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
    lines.append(
        f'Bytes each client exchanges in a round: upload {self.upload_bytes:,} bytes (the '
        f'trained tensors, float32); download {self.download_bytes:,} bytes '
        '(TFF broadcasts the whole model, frozen tensors included, every '
        'round).')
    return lines


def _count(struct_type) -> int:
  return int(
      sum(
          np.prod(leaf.shape, dtype=np.int64)
          for leaf in tff.structure.flatten(struct_type)))


def of_process(process: Any, *, trainable: str) -> ModelSize:
  """The `ModelSize` of a learning process (its `get_model_weights`)."""
  weights_type = process.get_model_weights.type_signature.result
  return ModelSize(trainable=trainable,
                   trainable_parameters=_count(weights_type.trainable),
                   frozen_parameters=_count(weights_type.non_trainable))

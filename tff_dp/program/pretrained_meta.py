"""The pretrained checkpoint's description, read and checked without TensorFlow.

`tff_dp.program.pretrained` writes and loads the weights; this module holds
what the program checks before it loads anything heavy (`tff_dp.program.
prepare`): the format of `pretrained.json`, the model's signature, the
checkpoint's match with the run, and the privacy statement's sentence on the
data treated as public. Pure Python.
"""

import hashlib
import json
import os
from typing import Any, Optional

import numpy as np

from tff_dp.checks import ConfigError
from tff_dp.config import ModelKind
from tff_dp.config import TrainConfig

FORMAT = 'tff-dp pretrained v1'
WEIGHTS_FILE = 'weights.h5'
META_FILE = 'pretrained.json'
# The size flags that shape each model (the others change nothing in it).
_SIZE_FLAGS = {
    ModelKind.MLP: ('hidden_layers', 'hidden_units'),
    ModelKind.LOGISTIC_REGRESSION: (),
    ModelKind.CNN: (),
    ModelKind.RNN: ('hidden_layers', 'hidden_units', 'embedding_dim'),
    ModelKind.TRANSFORMER: ('transformer_layers', 'transformer_width',
                            'transformer_heads', 'transformer_ff_width'),
}


def model_signature(config: TrainConfig, data: Any) -> dict[str, Any]:
  """What fixes the model's weights' shapes and meaning, as flag -> value."""
  signature = {
      'model':
          config.model.value,
      'input_dim':
          int(data.input_dim),
      'num_classes':
          int(data.num_classes),
      'vocab_size':
          data.vocab_size,
      'image_shape':
          (None if data.image_shape is None else list(data.image_shape)),
  }
  for name in _SIZE_FLAGS[config.model]:
    signature[name] = getattr(config, name)
  return signature


def public_examples(config: TrainConfig,
                    data: Any) -> tuple[np.ndarray, np.ndarray]:
  """The (features, labels) of the clients `data` declares public.

  Raises:
    ConfigError: If the dataset declares no public clients.
  """
  if not callable(getattr(data, 'public_examples', None)):
    raise ConfigError(
        'dataset', config.dataset.value,
        'declares no public clients, and pretraining runs on public data '
        'only (without noise); declare some with --public_clients=FILE or '
        '--public_fraction=F (data with natural clients), or use '
        '--dataset=python_stdlib, whose public modules never join the '
        'private population')
  return data.public_examples()


def file_sha256(path: str) -> str:
  """'sha256:<hex>' of the file at `path`."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return 'sha256:' + digest.hexdigest()


def read_meta(checkpoint_dir: str) -> dict[str, Any]:
  """The checkpoint's `pretrained.json`; ConfigError if unreadable."""
  path = os.path.join(checkpoint_dir, META_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(
        'init_from', checkpoint_dir,
        f'no readable {META_FILE} ({e}); write one with '
        './run.sh pretrain') from e
  if not isinstance(meta, dict) or meta.get('format') != FORMAT:
    raise ConfigError('init_from', checkpoint_dir,
                      f'{META_FILE} is not a {FORMAT!r} file')
  return meta


def _check_matches(checkpoint_dir: str, meta: dict[str, Any],
                   config: TrainConfig, data: Any) -> None:
  """ConfigError naming the first difference between checkpoint and run."""
  if meta.get('dataset') != config.dataset.value:
    raise ConfigError(
        'init_from', checkpoint_dir,
        f"was pretrained for --dataset={meta.get('dataset')}, this run has "
        f'--dataset={config.dataset.value}')
  saved = meta.get('model') or {}
  ours = model_signature(config, data)
  # The model kind first: its other differences follow from it.
  for name in ['model'] + sorted((set(saved) | set(ours)) - {'model'}):
    if saved.get(name) != ours.get(name):
      raise ConfigError(
          'init_from', checkpoint_dir,
          f'was pretrained with {name}={saved.get(name)}, this run has '
          f'{name}={ours.get(name)} (train with the checkpoint\'s model, '
          'or pretrain this one)')
  # Its public clients were read without noise: in this run's population
  # they would be private clients whose data the initial model already
  # released.
  ours_public = set(getattr(data, 'public_client_ids', None) or ())
  private = [
      c for c in meta.get('public_clients') or [] if c not in ours_public
  ]
  if private:
    raise ConfigError(
        'init_from', checkpoint_dir,
        f'was pretrained on {len(private)} clients that are private in this '
        f'run (e.g. {private[0]!r}); declare the public clients the '
        f"pretraining used ({meta.get('public_rule') or 'unnamed rule'}; "
        f'listed in its {META_FILE})')


def check_checkpoint(checkpoint_dir: str, config: TrainConfig,
                     data: Any) -> dict[str, Any]:
  """The checkpoint's description, if it fits the run and its weights file
  is the one it describes.

  Raises:
    ConfigError: One line naming what is unreadable, altered or different.
  """
  meta = read_meta(checkpoint_dir)
  _check_matches(checkpoint_dir, meta, config, data)
  try:
    actual = file_sha256(os.path.join(checkpoint_dir, WEIGHTS_FILE))
  except OSError as e:
    raise ConfigError('init_from', checkpoint_dir,
                      f'cannot read {WEIGHTS_FILE}: {e.strerror or e}') from e
  if actual != meta.get('weights_sha256'):
    raise ConfigError(
        'init_from', checkpoint_dir,
        f'{WEIGHTS_FILE} does not match the hash in {META_FILE} (altered '
        'or from another checkpoint)')
  return meta


def public_data_sentence(init_from: str, data: Any = None) -> Optional[str]:
  """The privacy statement's sentence on the data treated as public: the
  pretraining data of `init_from`, else the clients `data` declares public
  (None if neither)."""
  if not init_from:
    public = getattr(data, 'public_client_ids', None)
    if not public:
      return None
    return (f'Public clients: {len(public)} clients of the data were '
            f"declared public ({getattr(data, 'public_rule', '')}). They are "
            'not in the population and the guarantee says nothing about them.')
  meta = read_meta(init_from)
  clients = meta.get('public_clients') or []
  rule = meta.get('public_rule') or 'declared public by the dataset'
  return (f"Initial model: pretrained centrally, WITHOUT noise, on data "
          f"treated as public: {len(clients)} clients of --dataset="
          f"{meta.get('dataset')} ({rule}; listed in {init_from}/"
          f'{META_FILE}). They are not in the population and the guarantee '
          'says nothing about them.')

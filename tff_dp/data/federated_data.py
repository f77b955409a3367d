"""A federated dataset held in memory as numpy arrays.

`FederatedData` is the hand-off between data loading (pure numpy) and the
TFF side, which turns each client's arrays into a `tf.data.Dataset` (or the
grouped path's client files, `tff_dp.algorithms.grouped_data`). It is
validated once on construction so that every later stage can rely on the
invariants: float32 features, int32 labels in [0, num_classes), all values
finite, and no empty client (an empty client could never contribute and
would make the population N used for privacy accounting wrong).

Labels (`labels.LabelKind`): one class id per example, int32 [n]
(`SINGLE`, the offline datasets), or the next token at every position of a
window of W token ids, int32 [n, W] with W the number of features
(`NEXT_TOKENS`: token data held in memory for the transformer,
`tff_dp.data.token_memory`). Token features are ids in [0, vocab_size).
"""

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from tff_dp.data.labels import LabelKind


def _readonly(array: np.ndarray) -> np.ndarray:
  # A view, so the caller's own array stays writable; ours cannot be
  # modified behind the frozen dataclass's back.
  view = array.view()
  view.flags.writeable = False
  return view


def _check_xy(x: Any,
              y: Any,
              what: str,
              num_classes: int,
              input_dim: int | None,
              label_kind: LabelKind = LabelKind.SINGLE) -> None:
  """Raises ValueError if (x, y) of `what` break an invariant."""
  if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray):
    raise ValueError(f'{what}: x and y must be numpy arrays, got '
                     f'{type(x).__name__} and {type(y).__name__}')
  if x.dtype != np.float32 or x.ndim != 2:
    raise ValueError(f'{what}: x must be a 2-D float32 array, got '
                     f'{x.ndim}-D {x.dtype}')
  label_dims = 2 if label_kind is LabelKind.NEXT_TOKENS else 1
  if y.dtype != np.int32 or y.ndim != label_dims:
    raise ValueError(f'{what}: y must be a {label_dims}-D int32 array, got '
                     f'{y.ndim}-D {y.dtype}')
  if label_dims == 2 and y.shape[1] != x.shape[1]:
    raise ValueError(f'{what}: next-token labels must have one id per '
                     f'feature ({x.shape[1]}), got {y.shape[1]}')
  if x.shape[0] != y.shape[0]:
    raise ValueError(f'{what}: x has {x.shape[0]} rows but y has '
                     f'{y.shape[0]} labels')
  if x.shape[0] == 0:
    raise ValueError(f'{what} has no examples')
  if x.shape[1] == 0:
    raise ValueError(f'{what}: x has no features')
  if input_dim is not None and x.shape[1] != input_dim:
    raise ValueError(f'{what}: x has {x.shape[1]} features, expected '
                     f'{input_dim}')
  if not np.all(np.isfinite(x)):
    raise ValueError(f'{what}: x contains NaN or infinite values')
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(f'{what}: labels must be in [0, {num_classes}), got '
                     f'range [{y.min()}, {y.max()}]')


def size_statistics(name: str, sizes: Sequence[int]) -> dict[str, Any]:
  """Name, clients and examples per client (min/median/max/mean) of a
  population with these client sizes; the shared part of every data source's
  `statistics()`."""
  sizes = np.asarray(sizes)
  return {
      'name': name,
      'clients': int(sizes.shape[0]),
      'examples_total': int(sizes.sum()),
      'examples_per_client_min': int(sizes.min()),
      'examples_per_client_median': float(np.median(sizes)),
      'examples_per_client_max': int(sizes.max()),
      'examples_per_client_mean': float(sizes.mean()),
  }


@dataclasses.dataclass(frozen=True, eq=False)
class FederatedData:
  """Per-client training data plus a server-side held-out test set.

  The test set is not client data: it is used only for evaluation by the
  server (as in simulation studies), never for training.

  `eq=False` because element-wise array comparison has no single truth
  value; instances compare (and hash) by identity.

  Attributes:
    name: Short dataset name, e.g. 'digits'.
    client_ids: One distinct string id per client.
    client_x: Per-client float32 features, shape [n_k, input_dim].
    client_y: Per-client int32 labels, shape [n_k].
    test_x: Float32 features of the held-out test set.
    test_y: Int32 labels of the held-out test set.
    num_classes: Number of classes; labels are in [0, num_classes).
    provenance: Human-readable note on how the data was produced (source,
      preprocessing, split, partition, seed); shown by `describe()`.
    image_shape: (height, width, channels) if each row of x is an image
      flattened row-major, channels last (what the CNN reshapes it to);
      None for data that are not images.
    vocab_size: For token data, the number of token ids: every feature is
      an integer id in [0, vocab_size) (what the rnn and the transformer
      embed); None for other data.
    label_kind: `SINGLE` (y int32 [n]) or `NEXT_TOKENS` (y int32 [n, d]:
      the next id at each of the d positions of a window).
    public_client_ids: Clients the source declared public (e.g.
      python_stdlib's public modules): never among `client_ids`, named by the
      privacy statement and checked against `--init_from`'s.
    public_rule: The rule that made them public, for the same texts.
  """
  name: str
  client_ids: tuple[str, ...]
  client_x: tuple[np.ndarray, ...]
  client_y: tuple[np.ndarray, ...]
  test_x: np.ndarray
  test_y: np.ndarray
  num_classes: int
  provenance: str = ''
  image_shape: Optional[tuple[int, int, int]] = None
  vocab_size: Optional[int] = None
  label_kind: LabelKind = LabelKind.SINGLE
  public_client_ids: tuple[str, ...] = ()
  public_rule: str = ''

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ValueError(f'name must be a non-empty string, got {self.name!r}')
    if (isinstance(self.num_classes, bool) or
        not isinstance(self.num_classes,
                       (int, np.integer)) or self.num_classes < 2):
      raise ValueError(f'num_classes must be an int >= 2, got '
                       f'{self.num_classes!r}')
    for field in ('client_ids', 'client_x', 'client_y'):
      if not isinstance(getattr(self, field), tuple):
        raise ValueError(f'{field} must be a tuple, got '
                         f'{type(getattr(self, field)).__name__}')
    if not self.client_ids:
      raise ValueError('there are no clients')
    if not (len(self.client_ids) == len(self.client_x) == len(self.client_y)):
      raise ValueError(
          f'lengths differ: {len(self.client_ids)} client_ids, '
          f'{len(self.client_x)} client_x, {len(self.client_y)} client_y')
    if not all(isinstance(i, str) and i for i in self.client_ids):
      raise ValueError('client_ids must be non-empty strings')
    if len(set(self.client_ids)) != len(self.client_ids):
      raise ValueError('client_ids contains duplicates')
    object.__setattr__(self, 'label_kind', LabelKind(self.label_kind))
    input_dim = None
    for cid, x, y in zip(self.client_ids, self.client_x, self.client_y):
      _check_xy(x, y, f'client {cid!r}', self.num_classes, input_dim,
                self.label_kind)
      input_dim = x.shape[1]
    _check_xy(self.test_x, self.test_y, 'test set', self.num_classes, input_dim,
              self.label_kind)
    self._check_tokens()
    if self.image_shape is not None:
      shape = tuple(self.image_shape)
      if (len(shape) != 3 or
          not all(isinstance(n, (int, np.integer)) and n > 0 for n in shape) or
          int(np.prod(shape)) != input_dim):
        raise ValueError(f'image_shape {self.image_shape!r} must be '
                         '(height, width, channels) of positive ints whose '
                         f'product is the {input_dim} features')
      object.__setattr__(self, 'image_shape', tuple(int(n) for n in shape))
    object.__setattr__(self, 'client_x',
                       tuple(_readonly(x) for x in self.client_x))
    object.__setattr__(self, 'client_y',
                       tuple(_readonly(y) for y in self.client_y))
    object.__setattr__(self, 'test_x', _readonly(self.test_x))
    object.__setattr__(self, 'test_y', _readonly(self.test_y))
    object.__setattr__(self, 'num_classes', int(self.num_classes))

  @classmethod
  def from_partition(
      cls,
      *,
      name: str,
      x: np.ndarray,
      y: np.ndarray,
      client_indices: Sequence[np.ndarray],
      test_x: np.ndarray,
      test_y: np.ndarray,
      num_classes: int,
      client_ids: Sequence[str] | None = None,
      provenance: str = '',
      image_shape: tuple[int, int, int] | None = None) -> 'FederatedData':
    """Builds clients by indexing pooled training arrays.

    Args:
      name: Dataset name.
      x: Pooled training features; cast to float32.
      y: Pooled training labels; cast to int32.
      client_indices: One index array into (x, y) per client.
      test_x: Held-out features; cast to float32.
      test_y: Held-out labels; cast to int32.
      num_classes: Number of classes.
      client_ids: Client ids; defaults to zero-padded '0', '1', ...
      provenance: See the class docstring.
      image_shape: See the class docstring.

    Returns:
      The validated `FederatedData`.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int32)
    if client_ids is None:
      client_ids = default_client_ids(len(client_indices))
    return cls(name=name,
               client_ids=tuple(client_ids),
               client_x=tuple(x[idx] for idx in client_indices),
               client_y=tuple(y[idx] for idx in client_indices),
               test_x=np.asarray(test_x, dtype=np.float32),
               test_y=np.asarray(test_y, dtype=np.int32),
               num_classes=num_classes,
               provenance=provenance,
               image_shape=image_shape)

  def _check_tokens(self) -> None:
    """Token features are integer ids below `vocab_size`; public clients
    are not training clients."""
    object.__setattr__(self, 'public_client_ids',
                       tuple(str(c) for c in self.public_client_ids))
    if set(self.public_client_ids) & set(self.client_ids):
      raise ValueError('a public client is also a training client')
    if self.label_kind is LabelKind.MULTI_HOT:
      raise ValueError('multi-hot labels are not held in memory')
    if self.vocab_size is None:
      if self.label_kind is LabelKind.NEXT_TOKENS:
        raise ValueError('next-token labels need a vocab_size')
      return
    if (isinstance(self.vocab_size, bool) or
        not isinstance(self.vocab_size,
                       (int, np.integer)) or self.vocab_size < 2):
      raise ValueError(f'vocab_size must be an int >= 2, got '
                       f'{self.vocab_size!r}')
    object.__setattr__(self, 'vocab_size', int(self.vocab_size))
    for what, x in [
        *zip(self.client_ids, self.client_x), ('test set', self.test_x)
    ]:
      if x.min() < 0 or x.max() >= self.vocab_size or np.any(x != np.floor(x)):
        raise ValueError(f'{what}: token features must be integer ids in '
                         f'[0, {self.vocab_size})')

  @property
  def population(self) -> int:
    """Number of clients: the N used for privacy accounting."""
    return len(self.client_ids)

  @property
  def input_dim(self) -> int:
    return int(self.client_x[0].shape[1])

  def client_sizes(self) -> np.ndarray:
    """Number of training examples of each client, in client order."""
    return np.array([y.shape[0] for y in self.client_y], dtype=np.int64)

  def pooled_train(self) -> tuple[np.ndarray, np.ndarray]:
    """All clients' training data concatenated (for centralized baselines)."""
    return np.concatenate(self.client_x), np.concatenate(self.client_y)

  def statistics(self) -> dict[str, Any]:
    """Summary statistics as plain Python values (JSON-serializable)."""
    sizes = self.client_sizes()
    # Next-token labels count every position (the padding 0 included).
    train_hist = np.bincount(np.concatenate(self.client_y).ravel(),
                             minlength=self.num_classes)
    test_hist = np.bincount(self.test_y.ravel(), minlength=self.num_classes)
    return {
        **size_statistics(self.name, sizes),
        'input_dim': self.input_dim,
        'num_classes': self.num_classes,
        'label_histogram': [int(c) for c in train_hist],
        'test_examples': int(self.test_y.shape[0]),
        'test_label_histogram': [int(c) for c in test_hist],
    }

  def describe(self) -> str:
    """Multi-line human-readable summary of `statistics()`."""
    s = self.statistics()
    lines = [
        f"Federated data '{s['name']}': {s['clients']} clients "
        '(the population N for privacy accounting)',
    ]
    if self.provenance:
      lines.append(f'  provenance: {self.provenance}')
    lines += [
        f"  train examples: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']} (mean "
        f"{s['examples_per_client_mean']:.2f})",
        f"  features: {s['input_dim']}{_image_note(self.image_shape)}, "
        f"classes: {s['num_classes']}",
        f"  train label histogram: {_format_histogram(s['label_histogram'])}",
        f"  test examples (server-side evaluation only): "
        f"{s['test_examples']}; label histogram: "
        f"{_format_histogram(s['test_label_histogram'])}",
    ]
    return '\n'.join(lines)


def _image_note(image_shape: Optional[tuple[int, ...]]) -> str:
  """' (8x8x1 images)', or '' for data that are not images."""
  if image_shape is None:
    return ''
  return f' ({"x".join(str(n) for n in image_shape)} images)'


def _format_histogram(counts: Sequence[int], limit: int = 20) -> str:
  shown = ' '.join(
      f'{label}:{count}' for label, count in enumerate(counts[:limit]))
  # Many-class data would otherwise flood the start-up banner.
  if len(counts) > limit:
    shown += f' ... ({len(counts) - limit} more classes)'
  return shown


def default_client_ids(num_clients: int) -> list[str]:
  """Ids '0'..'N-1' zero-padded to equal width, so they sort numerically."""
  width = len(str(max(num_clients - 1, 0)))
  return [f'{k:0{width}d}' for k in range(num_clients)]

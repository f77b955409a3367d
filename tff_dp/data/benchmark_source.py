"""TFF's federated EMNIST and CIFAR-100 as training sources.

Federated EMNIST (Caldas et al. 2018, LEAF; Cohen et al. 2017) groups the
handwritten characters by their writer: 3,383 writers for the digits-only
variant, the population N of the accounting. Images are flattened to 784
features, the 784-128-10 MLP's input, and the labels kept. The
server's held-out set is the file's test split pooled over writers (the same
writers' held-out characters, as in TFF's DP tutorial).

Federated CIFAR-100 (Krizhevsky 2009, "Learning Multiple Layers of Features
from Tiny Images") is TFF's partition of the 50,000 training images over 500
clients by the Pachinko Allocation Method (Li and McCallum 2006), as in Reddi
et al. 2021, "Adaptive Federated Optimization" (ICLR): 100 images per
client, with label skew over the 20 coarse and 100 fine classes. The
32x32x3 uint8 images become 3,072 float32 features in [0, 1] (divided by
the fixed constant 255, never by statistics of the data: those would be an
un-noised release of client data); the label is the fine label (100
classes). The server's held-out set is the file's test split pooled: TFF's
partition of the 10,000 standard CIFAR-100 test images over 100 other
clients. Unlike Reddi et al., images are not randomly cropped or flipped.

Both are streamed from TFF's SQLite file by tf.data, as uint8 (CIFAR-100)
or float32 (EMNIST) until a client's examples are read; only the per-client
counts are read up front (from the file's `client_metadata` table), so
memory does not grow with the 600 MB that CIFAR-100's training images take
as float32. The file is untrusted input, read through `tff_datasets`:
`tff_cache` checks it on load and as it is read, and reads each client by a
query that its id cannot change (TFF's `SqlClientData` pasted the id into
its SQL). Server-side evaluation caches the pooled test set as float32
(123 MB for CIFAR-100, 128 MB for EMNIST digits). Each source declares the
`image_shape` its flat features hold (row-major, channels last), which the
CNN reshapes them to.
"""

from typing import Any, Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data import registry
from tff_dp.data import tff_datasets
from tff_dp.data.federated_data import size_statistics
from tff_dp.data.labels import LabelKind

_EMNIST_IMAGE_SHAPE = (28, 28, 1)
CIFAR100_IMAGE_SHAPE = (32, 32, 3)
CIFAR100_NUM_CLASSES = 100
# uint8 pixels: dividing by the format's maximum maps them to [0, 1].
_CIFAR100_PIXEL_MAX = 255.0
# Seed of the choice of a bounded sample of test clients (Stack Overflow's):
# fixed, so that every run is evaluated on the same examples.
_TEST_SAMPLE_SEED = 0

Converter = Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]]


def _emnist_features(element) -> tuple[tf.Tensor, tf.Tensor]:
  return (tf.reshape(tf.cast(element['pixels'], tf.float32),
                     [int(np.prod(_EMNIST_IMAGE_SHAPE))]),
          tf.cast(element['label'], tf.int32))


def cifar100_features(element) -> tuple[tf.Tensor, tf.Tensor]:
  """(image uint8 [32, 32, 3], fine label) -> (float32 [3072] in [0, 1], int32).

  Args:
    element: An element of TFF's CIFAR-100 ClientData: OrderedDict of
      'coarse_label' (int64), 'image' (uint8 [32, 32, 3]), 'label' (int64,
      the fine label in [0, 100)).
  """
  pixels = tf.reshape(element['image'], [int(np.prod(CIFAR100_IMAGE_SHAPE))])
  return (tf.cast(pixels, tf.float32) / _CIFAR100_PIXEL_MAX,
          tf.cast(element['label'], tf.int32))


class CachedClients:
  """What every source streamed from TFF's cache offers about its clients.

  Subclasses set `name`, `client_ids` (training client ids; a client index
  is a position in it) and `_sizes` (examples per client, int64, in that
  order).
  """

  name: str
  client_ids: list[str]
  _sizes: np.ndarray

  @property
  def population(self) -> int:
    return len(self.client_ids)

  def client_sizes(self) -> np.ndarray:
    return self._sizes.copy()

  def statistics(self) -> dict[str, Any]:
    return size_statistics(self.name, self._sizes)


class _TffBenchmarkSource(CachedClients):
  """A TFF benchmark from a local cache, with the interface training needs.

  Attributes:
    kind: Which of TFF's benchmarks.
    name: The `--dataset` value.
    client_ids: Training client ids, in TFF's (sorted) order; a client index
      is a position in it.
    input_dim: Number of features (the flattened image).
    num_classes: Labels are in [0, num_classes).
    image_shape: (height, width, channels) of the flattened images.
    vocab_size: None: the features are pixels, not token ids.
    label_kind: One class id per image.
  """

  vocab_size = None
  label_kind = LabelKind.SINGLE

  # How describe() names the clients and notes the data's origin.
  _CLIENT_NOUN = 'clients'
  _ORIGIN = ''
  _PREPROCESSING = ''

  def __init__(self, kind: tff_datasets.TffDataset, *, name: str, data_dir: str,
               convert: Converter, num_classes: int,
               image_shape: tuple[int, int, int]):
    self.kind = kind
    self.name = name
    self._convert = convert
    self._train, self._test = tff_datasets.load_tff_dataset(self.kind,
                                                            data_dir=data_dir)
    self.client_ids = list(self._train.client_ids)
    self.image_shape = image_shape
    self.input_dim = int(np.prod(image_shape))
    self.num_classes = num_classes
    self._sizes = self._train.client_sizes()

  def client_dataset(self, index: int) -> tf.data.Dataset:
    """The examples of client `index` (unbatched): (features, label)."""
    return self._train.dataset(self.client_ids[int(index)]).map(self._convert)

  def test_dataset(self) -> tf.data.Dataset:
    # A fixed seed: the test clients' order is reproducible (TFF's order
    # for create_tf_dataset_from_all_clients(seed=0)).
    return self._test.pooled_dataset(seed=0).map(self._convert)

  def describe(self) -> str:
    s = self.statistics()
    shape = 'x'.join(str(n) for n in self.image_shape)
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} {self._CLIENT_NOUN} "
        '(the population N for privacy accounting)',
        f"  {tff_datasets.title(self.kind)} from TFF's cache file"
        f'{self._ORIGIN}',
        f"  train examples: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f'  features: {self.input_dim} ({shape} images'
        f'{self._PREPROCESSING}), classes: {self.num_classes}',
        '  test: the file\'s test split, pooled (server-side evaluation only)',
    ])


class EmnistSource(_TffBenchmarkSource):
  """EMNIST from a local cache; the writers are the clients."""

  _CLIENT_NOUN = 'writers'

  def __init__(self, *, only_digits: bool, data_dir: str):
    kind = (tff_datasets.TffDataset.EMNIST_DIGITS
            if only_digits else tff_datasets.TffDataset.EMNIST_FULL)
    super().__init__(kind,
                     name=kind.value,
                     data_dir=data_dir,
                     convert=_emnist_features,
                     num_classes=10 if only_digits else 62,
                     image_shape=_EMNIST_IMAGE_SHAPE)


class Cifar100Source(_TffBenchmarkSource):
  """CIFAR-100 from a local cache: 500 clients, fine labels."""

  _ORIGIN = ' (Pachinko allocation over clients, Reddi et al. 2021)'
  _PREPROCESSING = ', pixels / 255'

  def __init__(self, *, data_dir: str):
    kind = tff_datasets.TffDataset.CIFAR100
    super().__init__(kind,
                     name=kind.value,
                     data_dir=data_dir,
                     convert=cifar100_features,
                     num_classes=CIFAR100_NUM_CLASSES,
                     image_shape=CIFAR100_IMAGE_SHAPE)


def sample_client_ids(client_ids: Sequence[str],
                      count: Optional[int]) -> list[str]:
  """`count` of the ids by a fixed seed, in their order (all if None)."""
  if count is None or count >= len(client_ids):
    return list(client_ids)
  rng = np.random.default_rng(_TEST_SAMPLE_SEED)
  chosen = np.sort(rng.choice(len(client_ids), size=count, replace=False))
  return [client_ids[i] for i in chosen]


def load_emnist_digits(request: registry.LoadRequest) -> EmnistSource:
  """`--dataset=emnist_digits` (a row of `tff_dp.data.registry`)."""
  return EmnistSource(only_digits=True, data_dir=request.data_dir)


def load_emnist_full(request: registry.LoadRequest) -> EmnistSource:
  """`--dataset=emnist_full` (a row of `tff_dp.data.registry`)."""
  return EmnistSource(only_digits=False, data_dir=request.data_dir)


def load_cifar100(request: registry.LoadRequest) -> Cifar100Source:
  """`--dataset=cifar100` (a row of `tff_dp.data.registry`)."""
  return Cifar100Source(data_dir=request.data_dir)

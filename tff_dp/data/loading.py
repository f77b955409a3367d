"""One entry point from `--dataset` to federated training data.

Three kinds of source share what training needs (`population`, `input_dim`,
`num_classes`, `image_shape` (None unless the features are flattened images,
which the CNN needs), `vocab_size` (None unless the features are token ids,
which the rnn model embeds), `label_kind` (`labels.LabelKind`: one class id
per example, or a multi-hot vector, which changes the loss and the metrics),
`client_sizes()`, `describe()`, and either numpy arrays or
`client_dataset(i)` / `test_dataset()`):
* offline data that ships (`FederatedData`: digits, breast cancer,
  Synthetic(alpha, beta)), held in memory, single-label;
* TFF's EMNIST and CIFAR-100 benchmarks from a local cache (`EmnistSource`,
  `Cifar100Source`), its Shakespeare and Stack Overflow as next-token
  windows (`token_sources.TokenSource`), and Stack Overflow tag prediction
  (`stackoverflow_tags.StackOverflowTagSource`, the only multi-label one),
  streamed;
* a user's table imported to SQLite (`SqlClientDataSource`), streamed.
TensorFlow is imported only for the streamed kinds.
"""

import enum
import os
from typing import Any, Optional

from tff_dp.data.labels import LabelKind
from tff_dp.data import offline
from tff_dp.data import partition as partition_lib


class Dataset(enum.Enum):
  DIGITS = 'digits'
  BREAST_CANCER = 'breast_cancer'
  SYNTHETIC = 'synthetic'
  EMNIST_DIGITS = 'emnist_digits'
  EMNIST_FULL = 'emnist_full'
  CIFAR100 = 'cifar100'
  SHAKESPEARE = 'shakespeare'
  STACKOVERFLOW_NWP = 'stackoverflow_nwp'
  STACKOVERFLOW_TAG = 'stackoverflow_tag'
  SQLITE = 'sqlite'


OFFLINE = {
    Dataset.DIGITS: offline.OfflineDataset.DIGITS,
    Dataset.BREAST_CANCER: offline.OfflineDataset.BREAST_CANCER,
    Dataset.SYNTHETIC: offline.OfflineDataset.SYNTHETIC,
}

# Features are token ids (`vocab_size` is set): only the rnn model fits them.
TOKEN_DATASETS = frozenset({Dataset.SHAKESPEARE, Dataset.STACKOVERFLOW_NWP})

# Labels are multi-hot vectors (the sources' `label_kind`); known before the
# data are loaded, so the configuration can be checked first.
MULTI_HOT_DATASETS = frozenset({Dataset.STACKOVERFLOW_TAG})

DEFAULT_DATA_DIR = os.path.join('~', '.cache', 'tff_dp', 'datasets')


class DataError(ValueError):
  """The data cannot be loaded; the message names the file and reason."""


def is_offline(dataset: Dataset) -> bool:
  return dataset in OFFLINE


def is_token_data(dataset: Dataset) -> bool:
  return dataset in TOKEN_DATASETS


def label_kind(dataset: Dataset) -> LabelKind:
  """The `label_kind` the source of `dataset` declares once loaded."""
  if dataset in MULTI_HOT_DATASETS:
    return LabelKind.MULTI_HOT
  return LabelKind.SINGLE


def load(dataset: Dataset, *, num_clients: int,
         partition: partition_lib.Partition, seed: int, test_fraction: float,
         dirichlet_alpha: float, data_dir: str,
         client_data: Optional[str]) -> Any:
  """Loads the federated data `dataset` names.

  Args:
    dataset: Which data.
    num_clients, partition, seed, test_fraction, dirichlet_alpha: How offline
      data is split (ignored by the other kinds, whose clients are natural).
    data_dir: Cache directory of TFF's benchmark files.
    client_data: The SQLite file for `Dataset.SQLITE`.

  Raises:
    DataError: With the file and reason, for anything that cannot be loaded.
  """
  if is_offline(dataset):
    try:
      return offline.load_offline(
          OFFLINE[dataset], num_clients=num_clients, partition=partition,
          seed=seed, test_fraction=test_fraction,
          dirichlet_alpha=dirichlet_alpha)
    except ValueError as e:
      raise DataError(str(e)) from e
  # pylint: disable=g-import-not-at-top
  if dataset is Dataset.SQLITE:
    from tff_dp.data import client_data_source
    if not client_data:
      raise DataError('--dataset=sqlite needs --client_data=<file.sqlite> '
                      '(made by ./run.sh import-data)')
    try:
      source = client_data_source.SqlClientDataSource(client_data)
    except (OSError, ValueError) as e:
      raise DataError(str(e)) from e
    if not source.has_test_set:
      raise DataError(f'{client_data}: has no test split; server-side '
                      'evaluation needs one (import with a test split)')
    return source
  from tff_dp.data import benchmark_source
  from tff_dp.data import stackoverflow_tags
  from tff_dp.data import token_sources
  data_dir = os.path.expanduser(data_dir)
  try:
    if dataset is Dataset.SHAKESPEARE:
      return token_sources.shakespeare_source(data_dir=data_dir)
    if dataset is Dataset.STACKOVERFLOW_NWP:
      return token_sources.stackoverflow_nwp_source(data_dir=data_dir)
    if dataset is Dataset.STACKOVERFLOW_TAG:
      return stackoverflow_tags.stackoverflow_tag_source(data_dir=data_dir)
    if dataset is Dataset.CIFAR100:
      return benchmark_source.Cifar100Source(data_dir=data_dir)
    return benchmark_source.EmnistSource(
        only_digits=dataset is Dataset.EMNIST_DIGITS, data_dir=data_dir)
  except (OSError, ValueError) as e:
    raise DataError(str(e)) from e

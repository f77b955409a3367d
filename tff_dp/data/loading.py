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
TensorFlow is imported only for the streamed kinds. Which datasets exist, and
what is known of each before loading, is `tff_dp.data.registry`.
"""

import enum
import os
from typing import Any, Optional

from tff_dp.data import partition as partition_lib
from tff_dp.data import public_clients as public_lib
from tff_dp.data import registry
from tff_dp.data.labels import LabelKind
from tff_dp.data.test_sets import TestSetOrigin

# `--dataset`'s values, one per row of `tff_dp.data.registry.DATASETS`
# (Dataset.DIGITS.value == 'digits', ...).
Dataset = enum.Enum('Dataset',
                    [(s.name.upper(), s.name) for s in registry.DATASETS])

DEFAULT_DATA_DIR = os.path.join('~', '.cache', 'tff_dp', 'datasets')


class DataError(ValueError):
  """The data cannot be loaded; the message names the file and reason."""


class DataDirError(DataError):
  """--data_dir names no readable directory; `reason` says why, `data_dir`
  is the value as given."""

  def __init__(self, data_dir: str, reason: str):
    super().__init__(f'--data_dir={data_dir}: {reason}')
    self.data_dir = data_dir
    self.reason = reason


def check_data_dir(dataset: Dataset, data_dir: str) -> None:
  """Refuses a --data_dir that `dataset` reads from and cannot use.

  Checked before loading, which imports TensorFlow for these datasets, and
  named as the flag: a file or a missing directory used to be reported as
  the dataset file missing from it ('put emnist_all.sqlite in /etc/passwd').

  Raises:
    DataDirError: If it is not a directory, or one this process cannot list.
  """
  files = registry.spec(dataset.value).data_files
  if not files:
    return
  path = os.path.expanduser(data_dir)
  that_is = f' (that is, {path})' if path != data_dir else ''
  reads = (f'--dataset={dataset.value} reads {", ".join(files)} from the '
           'directory it names')
  if not os.path.exists(path):
    reason = (f'no such directory{that_is}; {reads} (README.md, "Data '
              'sources and models", says where to get them)')
  elif not os.path.isdir(path):
    reason = f'is not a directory{that_is}; {reads}'
  elif not os.access(path, os.R_OK | os.X_OK):
    reason = f'is not readable (permission denied){that_is}; {reads}'
  else:
    return
  raise DataDirError(data_dir, reason)


def is_offline(dataset: Dataset) -> bool:
  return registry.spec(dataset.value).offline


def is_token_data(dataset: Dataset) -> bool:
  return registry.spec(dataset.value).tokens


def label_kind(dataset: Dataset) -> LabelKind:
  """The `label_kind` the source of `dataset` declares once loaded."""
  return registry.spec(dataset.value).label_kind


def test_set_origin(dataset: Dataset) -> TestSetOrigin:
  """The origin of `dataset`'s server-side test set (known before loading)."""
  return registry.spec(dataset.value).test_set


def load(
    dataset: Dataset,
    *,
    num_clients: int,
    partition: Optional[partition_lib.Partition],
    seed: int,
    test_fraction: float,
    dirichlet_alpha: float,
    data_dir: str,
    client_data: Optional[str],
    next_token_labels: bool = False,
    public: public_lib.PublicDeclaration = public_lib.PublicDeclaration()
) -> Any:
  """Loads the federated data `dataset` names, without its public clients.

  Args:
    dataset: Which data.
    num_clients, partition, seed, test_fraction, dirichlet_alpha: How offline
      data is split (ignored by the other kinds, whose clients are natural).
    data_dir: Cache directory of TFF's benchmark files.
    client_data: The SQLite file for `Dataset.SQLITE`.
    next_token_labels: Token data labelled at every position
      (`registry.LoadRequest`).
    public: The clients declared public (`--public_clients`,
      `--public_fraction`): removed from the population before anything
      else sees the data, offered for pretraining (`public_clients`).

  Raises:
    DataError: With the file and reason, for anything that cannot be loaded
      (`DataDirError` for an unusable --data_dir).
    ConfigError: For a bad declaration of public clients (names the flag).
  """
  check_data_dir(dataset, data_dir)
  request = registry.LoadRequest(num_clients=num_clients,
                                 partition=partition,
                                 seed=seed,
                                 test_fraction=test_fraction,
                                 dirichlet_alpha=dirichlet_alpha,
                                 data_dir=os.path.expanduser(data_dir),
                                 client_data=client_data,
                                 next_token_labels=next_token_labels)
  try:
    source = registry.spec(dataset.value).load(request)
  except (OSError, ValueError) as e:
    raise DataError(str(e)) from e
  return public_lib.apply(source, public, dataset=dataset.value)

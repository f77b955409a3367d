"""The datasets `--dataset` can name, one row each; loading, checks and help follow.

A row says what the program must know about a dataset before loading it:
whether it ships offline (then `--num_clients` and `--partition` split it),
whether its features are token ids (only the rnn and transformer models fit
them; the transformer asks for next-token labels at every position), its kind
of labels (which fixes the loss and the metrics), and where its server-side
test set comes from (which decides whether evaluation on it may be released
as covered by the guarantee, `tff_dp.data.test_sets`). `--dataset`'s values
and help text are generated from the rows.

To add a dataset: write its source as one module in `tff_dp/data/` with a
function `load(request: LoadRequest)` returning the training-data interface
described in `tff_dp.data.loading`, then add one `DatasetSpec` row to
`DATASETS`. The module is imported only when the dataset is loaded, so
TensorFlow stays unimported for the offline datasets.
"""

import dataclasses
import importlib
from typing import Any, Optional

from tff_dp.data import partition as partition_lib
from tff_dp.data.labels import LabelKind
from tff_dp.data.test_sets import TestSetOrigin


@dataclasses.dataclass(frozen=True)
class LoadRequest:
  """The settings a dataset's loader may use (from the run's configuration).

  Attributes:
    num_clients, partition, seed, test_fraction, dirichlet_alpha: How offline
      data is split (the other kinds have natural clients and ignore them).
    data_dir: Cache directory of TFF's benchmark files, `~` expanded.
    client_data: The client-data file of `--dataset=sqlite`, or None.
    next_token_labels: Token data label each window with the next token at
      every position (`labels.LabelKind.NEXT_TOKENS`, what the transformer
      predicts) instead of the one token after it; other data ignore it.
  """
  num_clients: int
  partition: Optional[partition_lib.Partition]
  seed: int
  test_fraction: float
  dirichlet_alpha: float
  data_dir: str
  client_data: Optional[str]
  next_token_labels: bool = False


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """One `--dataset` value and what is known of it before loading.

  Attributes:
    name: The `--dataset` value.
    help: What it is, for `--dataset`'s help (a phrase, no final period).
    loader: 'module:function'; the function takes a `LoadRequest`.
    offline: Ships with the project; split into clients by `--partition`.
    tokens: Features are token ids (`vocab_size` is set).
    label_kind: One class per example, or a multi-hot vector (token data:
      the label kind of the rnn's windows, one next token).
    test_set: Where the server-side test set comes from.
    data_files: The files it reads from `--data_dir` (paths inside it,
      those of `tff_datasets.cache_files`), so that an unusable directory
      is named before TensorFlow is imported; empty: it reads none.
  """
  name: str
  help: str
  loader: str
  offline: bool = False
  tokens: bool = False
  label_kind: LabelKind = LabelKind.SINGLE
  test_set: TestSetOrigin = TestSetOrigin.PUBLISHED_TEST_SPLIT
  data_files: tuple[str, ...] = ()

  def load(self, request: LoadRequest) -> Any:
    module, function = self.loader.split(':')
    return getattr(importlib.import_module(module), function)(request)


_HELD_OUT = TestSetOrigin.HELD_OUT_BEFORE_PARTITION
_OFFLINE = 'tff_dp.data.offline'
_BENCHMARKS = 'tff_dp.data.benchmark_source'
_TOKENS = 'tff_dp.data.token_sources'
_EMNIST = ('emnist_all.sqlite',)
_STACKOVERFLOW = ('stackoverflow.sqlite',)
_WORD_COUNTS = 'datasets/stackoverflow.word_count.tar.bz2'
_TAG_COUNTS = 'datasets/stackoverflow.tag_count.tar.bz2'

DATASETS = (
    DatasetSpec(
        'digits', "scikit-learn's handwritten digits (8x8 images, "
        '10 classes), shipped offline, split into --num_clients clients by '
        '--partition',
        f'{_OFFLINE}:load_digits',
        offline=True,
        test_set=_HELD_OUT),
    DatasetSpec('breast_cancer', "scikit-learn's breast cancer table (30 "
                'features, 2 classes), shipped offline, split like digits',
                f'{_OFFLINE}:load_breast_cancer',
                offline=True,
                test_set=_HELD_OUT),
    DatasetSpec('wine', "scikit-learn's wine recognition data (13 "
                'features, 3 classes), shipped offline, split like digits',
                'tff_dp.data.wine:load',
                offline=True,
                test_set=_HELD_OUT),
    DatasetSpec('synthetic', 'Synthetic(alpha, beta) of Li et al. 2020, '
                'generated per client (--partition=natural)',
                f'{_OFFLINE}:load_synthetic',
                offline=True,
                test_set=_HELD_OUT),
    DatasetSpec('synthetic_shared', 'Synthetic(1, 1) with one labelling '
                'model shared by all clients (their feature means differ), '
                'generated per client (--partition=natural)',
                f'{_OFFLINE}:load_synthetic_shared',
                offline=True,
                test_set=_HELD_OUT),
    DatasetSpec('emnist_digits', "TFF's federated EMNIST digits (writers "
                'are clients) from --data_dir',
                f'{_BENCHMARKS}:load_emnist_digits',
                data_files=_EMNIST),
    DatasetSpec('emnist_full', "TFF's federated EMNIST, 62 classes, from "
                '--data_dir',
                f'{_BENCHMARKS}:load_emnist_full',
                data_files=_EMNIST),
    DatasetSpec('cifar100', "TFF's federated CIFAR-100 (500 clients, 100 "
                'fine classes, 32x32x3 images) from --data_dir',
                f'{_BENCHMARKS}:load_cifar100',
                data_files=('cifar100.sqlite',)),
    DatasetSpec('shakespeare', "TFF's federated Shakespeare (715 speaking "
                'roles), the next character after a window of 80, from '
                '--data_dir',
                f'{_TOKENS}:load_shakespeare',
                tokens=True,
                data_files=('shakespeare.sqlite',)),
    DatasetSpec('stackoverflow_nwp', "TFF's federated Stack Overflow "
                '(342,477 users), the next word after a window of 20 '
                '(10,000-word vocabulary), from --data_dir',
                f'{_TOKENS}:load_stackoverflow_nwp',
                tokens=True,
                data_files=_STACKOVERFLOW + (_WORD_COUNTS,)),
    DatasetSpec('python_stdlib', "the running Python's standard library "
                'source, one client per module file (a federated '
                'code-completion task), the next character after a window '
                'of 64, shipped offline; a fixed set of modules is public '
                '(./run.sh pretrain)',
                'tff_dp.data.python_stdlib:load',
                tokens=True,
                test_set=TestSetOrigin.PUBLISHED_TEST_SPLIT),
    DatasetSpec('stackoverflow_tag', 'the same users, the tags of a post '
                '(multi-label, 500 tags) from its bag of words (10,000 '
                'words), from --data_dir',
                'tff_dp.data.stackoverflow_tags:load',
                label_kind=LabelKind.MULTI_HOT,
                data_files=_STACKOVERFLOW + (_WORD_COUNTS, _TAG_COUNTS)),
    DatasetSpec('sqlite', 'your own table imported with ./run.sh '
                'import-data, from --client_data',
                'tff_dp.data.client_data_source:load',
                test_set=TestSetOrigin.PRIVATE_POPULATION),
    DatasetSpec('python', 'clients passed from Python to tff_dp.train('
                'client_data=...) (a ClientData), with the test set the '
                'caller declares public',
                'tff_dp.data.python_client_data:load',
                test_set=TestSetOrigin.DECLARED_PUBLIC),
)

_BY_NAME = {spec.name: spec for spec in DATASETS}


def spec(name: str) -> DatasetSpec:
  """The row of `--dataset=name`; KeyError naming the known ones."""
  try:
    return _BY_NAME[name]
  except KeyError:
    raise KeyError(f'unknown dataset {name!r} (known: '
                   f'{", ".join(_BY_NAME)})') from None


def flag_help() -> str:
  """`--dataset`'s help text, from the rows."""
  return 'Federated dataset. ' + '; '.join(
      f'{s.name}: {s.help}' for s in DATASETS) + '.'

"""Token data read into memory, so that the grouped path can train on it.

The token datasets (`python_stdlib`, `shakespeare`, `stackoverflow_nwp`)
are streamed sources: a client's windows are cut from its text when its
dataset is read (`token_sources.token_windows`). The grouped path
(`tff_dp.algorithms.grouped_fedavg`, many simulated clients per TFF call)
needs every client's examples as arrays (`FederatedData`), which it writes
once per run to files its TFF worker reads (`tff_dp.algorithms.
grouped_data.GroupedRounds`). `to_federated_data` reads a token source's
training clients and its server test set into a `FederatedData` with the
same windows, labels (`LabelKind.NEXT_TOKENS` for the transformer), clients
in the same order, and the clients it declared public.

The rule (`MAX_IN_MEMORY_CLIENTS`) is decided by the population N alone,
which the accounting already treats as public: whether a run holds its data
in memory, and so which path trains it, never depends on how much text the
clients hold (that would be a statistic of their data, printed and recorded
without noise). At most 10,000 clients: `python_stdlib` (549 private
modules with Python 3.11.7, at most 64 windows each: 28,959 windows, 14.8 MB
as float32 features and int32 labels) and `shakespeare` (715 roles) are read;
`stackoverflow_nwp`'s 342,477 users stay streamed, one client per TFF call.
"""

from typing import Any

import numpy as np

from tff_dp.data.federated_data import FederatedData

# Most training clients a token source may have to be read into memory
# (module docstring): the two smaller benchmarks, never Stack Overflow.
MAX_IN_MEMORY_CLIENTS = 10_000

RULE = (f'token data with at most {MAX_IN_MEMORY_CLIENTS:,} training '
        'clients (python_stdlib, shakespeare) is read into memory for the '
        'transformer; more (stackoverflow_nwp) is streamed')


def fits(source: Any) -> bool:
  """Whether `source`'s training clients are read into memory (the rule)."""
  return source.population <= MAX_IN_MEMORY_CLIENTS


def _dataset_arrays(dataset) -> tuple[np.ndarray, np.ndarray]:
  """An unbatched dataset of (features, label) as two stacked arrays."""
  xs, ys = [], []
  # Large batches: one numpy conversion per few thousand windows.
  for x, y in dataset.batch(4096).as_numpy_iterator():
    xs.append(x)
    ys.append(y)
  return np.concatenate(xs), np.concatenate(ys)


def _client_arrays(source: Any, index: int) -> tuple[np.ndarray, np.ndarray]:
  """Client `index`'s windows: the source's own arrays where it has them
  (python_stdlib holds its windows), else read from its dataset."""
  own = getattr(source, 'client_arrays', None)
  if callable(own):
    return own(index)
  return _dataset_arrays(source.client_dataset(index))


def _test_arrays(source: Any) -> tuple[np.ndarray, np.ndarray]:
  own = getattr(source, 'test_arrays', None)
  if callable(own):
    return own()
  return _dataset_arrays(source.test_dataset())


def to_federated_data(source: Any) -> FederatedData:
  """`source`'s training clients and server test set, in memory.

  Args:
    source: A streamed token source (`token_sources.TokenSource`,
      `python_stdlib.PythonStdlibSource`, or their public-clients view):
      `client_ids`, `client_dataset(i)`, `test_dataset()`, `num_classes`,
      `vocab_size`, `label_kind`.

  Returns:
    A `FederatedData` with the same clients (in order), windows, labels and
    test set, the source's public clients and rule, and `vocab_size`.

  Raises:
    ValueError: If a client has no window (a streamed client can be empty;
      the population N counts it, so the run must not drop it silently).
  """
  xs, ys = [], []
  for i in range(source.population):
    x, y = _client_arrays(source, i)
    xs.append(np.asarray(x, np.float32))
    ys.append(np.asarray(y, np.int32))
  test_x, test_y = _test_arrays(source)
  return FederatedData(
      name=source.name,
      client_ids=tuple(str(c) for c in source.client_ids),
      client_x=tuple(xs),
      client_y=tuple(ys),
      test_x=np.asarray(test_x, np.float32),
      test_y=np.asarray(test_y, np.int32),
      num_classes=source.num_classes,
      provenance=(f'{source.name}: the windows of its {source.population} '
                  'training clients and its server test set, read into '
                  'memory (tff_dp/data/token_memory.py)'),
      image_shape=None,
      vocab_size=source.vocab_size,
      label_kind=source.label_kind,
      public_client_ids=tuple(getattr(source, 'public_client_ids', ())),
      public_rule=getattr(source, 'public_rule', ''))

"""Clients passed from Python (`tff_dp.train(client_data=...)`): `--dataset=python`.

A `tff.simulation.datasets.ClientData` (TFF's interface for federated data:
`client_ids`, `create_tf_dataset_for_client`) becomes `FederatedData`, so it
trains on the grouped fast path and is checked like every other source (no
empty client, finite features, labels in range). Each element must be an
(x, y) pair or a mapping with 'x' and 'y', or `element_fn` must turn it into
one; x is flattened to one row of float32 features, y is an integer class.
The data is read into memory once.

The test set (`test_data`, unbatched (x, y) elements of the same kind) is
the server's: by passing it, the caller declares it public, i.e. not data of
the clients the guarantee protects (as TFF's published test splits are), so
evaluation on it is released as covered. Pass data of the private population
and the statement would be wrong: hold out clients instead
(`evaluation='federated'`).

From the command line `--dataset=python` is refused: there is no Python
object to read.
"""

from typing import Any, Callable, Optional

import numpy as np

from tff_dp.data import loading
from tff_dp.data.federated_data import FederatedData


def _xy(element: Any) -> tuple[Any, Any]:
  if isinstance(element, dict) or hasattr(element, 'keys'):
    if 'x' not in element or 'y' not in element:
      raise loading.DataError(
          f'client data elements are mappings with keys {sorted(element)}; '
          "expected 'x' and 'y', or pass element_fn to map them to (x, y)")
    return element['x'], element['y']
  if isinstance(element, (tuple, list)) and len(element) == 2:
    return element[0], element[1]
  raise loading.DataError(
      f'client data elements must be (x, y) pairs, got {type(element)!r}; '
      'pass element_fn to map them')


def _arrays(dataset, element_fn, what: str) -> tuple[np.ndarray, np.ndarray]:
  """All of an unbatched dataset's examples as (x [n, d] float32, y [n])."""
  xs, ys = [], []
  for element in dataset.as_numpy_iterator():
    x, y = _xy(element_fn(element) if element_fn else element)
    xs.append(np.asarray(x, np.float32).ravel())
    ys.append(np.asarray(y).reshape(()))
  if not xs:
    raise loading.DataError(f'{what} has no examples')
  if len({x.size for x in xs}) != 1:
    raise loading.DataError(f'{what}: examples have different feature sizes')
  labels = np.stack(ys)
  if not np.issubdtype(labels.dtype, np.integer):
    raise loading.DataError(f'{what}: labels must be integer classes, got '
                            f'{labels.dtype}')
  return np.stack(xs), labels.astype(np.int32)


def from_client_data(client_data: Any,
                     *,
                     test_data: Any,
                     num_classes: Optional[int] = None,
                     element_fn: Optional[Callable[[Any], Any]] = None,
                     name: str = 'python') -> FederatedData:
  """The clients of `client_data` and the public `test_data`, in memory.

  Args:
    client_data: A `tff.simulation.datasets.ClientData` (or anything with
      `client_ids` and `create_tf_dataset_for_client(id)`).
    test_data: Unbatched `tf.data.Dataset` of the server's public test
      examples, elements like the clients'.
    num_classes: Number of classes; None: the largest label seen plus one.
    element_fn: Maps an element of either to (x, y) (e.g. EMNIST's
      OrderedDict of 'pixels' and 'label').
    name: The data's name in the banner and the statement.

  Raises:
    tff_dp.data.loading.DataError: Naming the client and what is wrong.
  """
  ids = [str(i) for i in client_data.client_ids]
  if not ids:
    raise loading.DataError('client_data has no clients')
  pairs = [
      _arrays(client_data.create_tf_dataset_for_client(i), element_fn,
              f'client {i!r}') for i in client_data.client_ids
  ]
  test_x, test_y = _arrays(test_data, element_fn, 'test_data')
  if num_classes is None:
    num_classes = int(
        max(max(int(y.max()) for _, y in pairs), int(test_y.max()))) + 1
  try:
    return FederatedData(
        name=name,
        client_ids=tuple(ids),
        client_x=tuple(x for x, _ in pairs),
        client_y=tuple(y for _, y in pairs),
        test_x=test_x,
        test_y=test_y,
        num_classes=max(num_classes, 2),
        provenance=(f'{len(ids)} clients passed from Python as ClientData; '
                    'the test set declared public by the caller'))
  except ValueError as e:
    raise loading.DataError(str(e)) from e


def load(request: Any) -> Any:
  """`--dataset=python` from the command line: refused."""
  del request
  raise loading.DataError(
      '--dataset=python holds clients passed from Python '
      '(tff_dp.train(client_data=...)); from the command line use '
      '--dataset=sqlite with ./run.sh import-data, or a built-in dataset')

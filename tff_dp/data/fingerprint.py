"""A content fingerprint of a run's training data, checked when it resumes.

A resumed run must train the clients its ledger charged: a different
population, or a client's data replaced under the same file name, would
continue a guarantee that was computed for other data. The fingerprint is
recorded in every checkpoint and compared on resume (`tff_dp.program.resume`).

* In-memory data (`FederatedData`: the offline datasets and their split into
  clients): SHA-256 over the client ids, each client's features and labels
  and the test set; milliseconds for the shipped datasets.
* A user's imported SQLite file: the file's own SHA-256, computed when it was
  opened and checked (`SqlClientDataSource.fingerprint`).
* TFF's benchmark caches: None (not fingerprinted: hashing Stack Overflow's
  cache would take minutes at every start); they are identified by the flags
  that name them.
Pure Python (numpy).
"""

import hashlib
from typing import Any, Optional

import numpy as np

from tff_dp.data.federated_data import FederatedData


def _array_digest(digest, array: np.ndarray) -> None:
  array = np.ascontiguousarray(array)
  digest.update(f'{array.dtype.str}{array.shape}'.encode())
  digest.update(array.tobytes())


def data_fingerprint(data: Any) -> Optional[str]:
  """'sha256:<hex>' of the training data `data` holds, or None (module doc)."""
  own = getattr(data, 'fingerprint', None)
  if callable(own):
    return own()
  if not isinstance(data, FederatedData):
    return None
  digest = hashlib.sha256(b'tff-dp FederatedData v1\n')
  digest.update('\n'.join(data.client_ids).encode())
  for x, y in zip(data.client_x, data.client_y):
    _array_digest(digest, x)
    _array_digest(digest, y)
  _array_digest(digest, data.test_x)
  _array_digest(digest, data.test_y)
  return 'sha256:' + digest.hexdigest()

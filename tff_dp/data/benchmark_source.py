"""TFF's federated EMNIST as a training source (writers are the clients).

Federated EMNIST (Caldas et al. 2018, LEAF; Cohen et al. 2017) groups the
handwritten characters by their writer: 3,383 writers for the digits-only
variant, the population N of the accounting. Images are flattened to 784
features, the founding document's MLP input, and the labels kept. Examples
are streamed from TFF's SQLite file by tf.data; only the per-client counts
are read up front (from the file's `client_metadata` table).

The server's held-out set is the file's test split pooled over writers (the
same writers' held-out characters, as in TFF's DP tutorial): it is used only
for server-side evaluation, as public data.
"""

import sqlite3
from typing import Any

import numpy as np
import tensorflow as tf

from tff_dp.data import tff_datasets

_INPUT_DIM = 28 * 28


def _flatten(element) -> tuple[tf.Tensor, tf.Tensor]:
  return (tf.reshape(tf.cast(element['pixels'], tf.float32), [_INPUT_DIM]),
          tf.cast(element['label'], tf.int32))


class EmnistSource:
  """EMNIST from a local cache, with the interface training needs."""

  def __init__(self, *, only_digits: bool, data_dir: str):
    self.kind = (tff_datasets.TffDataset.EMNIST_DIGITS if only_digits else
                 tff_datasets.TffDataset.EMNIST_FULL)
    self.name = self.kind.value
    self._train, self._test = tff_datasets.load_tff_dataset(
        self.kind, data_dir=data_dir)
    self.client_ids = list(self._train.client_ids)
    self.input_dim = _INPUT_DIM
    self.num_classes = 10 if only_digits else 62
    path = tff_datasets.cache_files(self.kind)[0].path(data_dir)
    self._sizes = _client_sizes(path, tff_datasets.split_names(self.kind)[0],
                                self.client_ids)

  @property
  def population(self) -> int:
    return len(self.client_ids)

  def client_sizes(self) -> np.ndarray:
    return self._sizes.copy()

  def client_dataset(self, index: int) -> tf.data.Dataset:
    """The examples of writer `index` (unbatched): (pixels [784], label)."""
    return self._train.serializable_dataset_fn(
        self.client_ids[int(index)]).map(_flatten)

  def test_dataset(self) -> tf.data.Dataset:
    return self._test.create_tf_dataset_from_all_clients(seed=0).map(_flatten)

  def statistics(self) -> dict[str, Any]:
    sizes = self._sizes
    return {'name': self.name, 'clients': self.population,
            'examples_total': int(sizes.sum()),
            'examples_per_client_min': int(sizes.min()),
            'examples_per_client_median': float(np.median(sizes)),
            'examples_per_client_max': int(sizes.max())}

  def describe(self) -> str:
    s = self.statistics()
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} writers (the "
        'population N for privacy accounting)',
        f"  {tff_datasets.title(self.kind)} from TFF's cache file",
        f"  train examples: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f'  features: {self.input_dim}, classes: {self.num_classes}',
        '  test: the file\'s test split, pooled (server-side evaluation only)',
    ])


def _client_sizes(path: str, split: str, client_ids) -> np.ndarray:
  con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
  try:
    counts = dict(con.execute(
        'SELECT client_id, num_examples FROM client_metadata WHERE '
        'split_name = ?', (split,)).fetchall())
  finally:
    con.close()
  return np.array([int(counts[cid]) for cid in client_ids], dtype=np.int64)

"""Checks every example row of a client-data file as training parses it.

`client_data_source` runs `scan_examples` when it opens a file, after
`client_data_checks` has checked the schema and the metadata: each row's
split name and label column, and its serialized example parsed with the
spec training parses it with (`feature_spec`): input_dim finite float32
features and a label equal to the label column, in [0, num_classes). Rows
are read in batches, so the memory is bounded whatever the file's size; a
bad row raises a `client_data_checks.ClientDataFormatError` naming it.
"""

import re
import sqlite3
from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data import client_data_checks
from tff_dp.data import client_data_writer
from tff_dp.data import example_encoding
from tff_dp.data import sql_queries

_TRAIN = client_data_writer.TRAIN_SPLIT
_TEST = client_data_writer.TEST_SPLIT

# Rows, and bytes of parsed features, checked at a time: bounds the memory.
_SCAN_ROWS = 10_000
_SCAN_FEATURE_BYTES = 32 << 20
# An example is 4 bytes per feature and a few dozen of framing: a much
# larger blob is not one training could read, so it is not loaded.
_EXAMPLE_SLACK_BYTES = 1024


def feature_spec(input_dim: int) -> dict[str, tf.io.FixedLenFeature]:
  """How training parses an example; the checks use the same spec."""
  return {
      example_encoding.FEATURES_KEY:
          tf.io.FixedLenFeature([input_dim], tf.float32),
      example_encoding.LABEL_KEY:
          tf.io.FixedLenFeature([], tf.int64),
  }


def _parse_examples(path: str, rowids: Sequence[int], blobs: Sequence[bytes],
                    spec) -> tuple[np.ndarray, np.ndarray]:
  """(features, labels) of serialized examples; names the first bad row."""
  # TensorFlow's message quotes the bytes, and fails to decode if they are
  # not UTF-8: both errors mean the parse failed.
  errors = (tf.errors.InvalidArgumentError, UnicodeDecodeError)
  try:
    parsed = tf.io.parse_example(tf.constant(blobs, tf.string), spec)
  except errors:
    # Only to name the row: parse them one by one.
    for rowid, blob in zip(rowids, blobs):
      try:
        tf.io.parse_example(tf.constant([blob], tf.string), spec)
      except errors as e:
        # Without TensorFlow's '{{function_node ...}}' prefix.
        reason = re.sub(r'\{\{.*?\}\}', '', getattr(e, 'message',
                                                    'undecodable'))
        reason = ' '.join(reason.split())[:200]
        dim = spec[example_encoding.FEATURES_KEY].shape[0]
        raise client_data_checks.error(
            path, f'examples row {rowid}: serialized_example_proto '
            f'is not an example of {dim} float features and one '
            f'integer label ({reason})') from None
    raise
  return (parsed[example_encoding.FEATURES_KEY].numpy(),
          parsed[example_encoding.LABEL_KEY].numpy())


def _check_rows(path: str, con: sqlite3.Connection, rows: list[tuple], spec,
                m: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """Checks one batch of the scan; returns (labels, is_train)."""
  rowids, train, test, labels, blobs = zip(*rows)
  is_train = np.array(train, dtype=bool)
  bad = ~(is_train | np.array(test, dtype=bool))
  if bad.any():
    rowid = rowids[int(np.argmax(bad))]
    value = con.execute('SELECT split_name FROM examples WHERE rowid = ?',
                        (rowid,)).fetchone()[0]
    raise client_data_checks.error(
        path, f'examples row {rowid}: split_name {sql_queries.show(value)}: '
        f'expected {_TRAIN!r} or {_TEST!r}')
  if None in blobs:
    rowid = rowids[blobs.index(None)]
    kind, size = con.execute(
        'SELECT typeof(serialized_example_proto), length('
        'serialized_example_proto) FROM examples WHERE rowid = ?',
        (rowid,)).fetchone()
    raise client_data_checks.error(
        path, f'examples row {rowid}: serialized_example_proto is '
        f'{kind} of {size} bytes, not a serialized example')
  classes = m['num_classes']
  # Types first: numpy would take 1.0 or True as 1.
  y = (np.array(labels, dtype=np.int64)
       if set(map(type, labels)) == {int} else None)
  if y is None or ((y < 0) | (y >= classes)).any():
    i = next(i for i, v in enumerate(labels)
             if not client_data_checks.is_int(v) or not 0 <= v < classes)
    raise client_data_checks.error(
        path, f'examples row {rowids[i]}: label {sql_queries.show(labels[i])}: '
        f'expected an integer in [0, num_classes={classes})')
  x, parsed_y = _parse_examples(path, rowids, blobs, spec)
  if (parsed_y != y).any():
    i = int(np.argmax(parsed_y != y))
    raise client_data_checks.error(
        path, f'examples row {rowids[i]}: the example\'s label '
        f'{parsed_y[i]} differs from its label column {y[i]}')
  finite = np.isfinite(x)
  if not finite.all():
    i, j = (int(k) for k in np.argwhere(~finite)[0])
    raise client_data_checks.error(
        path, f'examples row {rowids[i]}: feature '
        f"{m['feature_names'][j]!r} is {x[i, j]}: NaN and infinite "
        'values are not allowed')
  return y, is_train


def scan_examples(path: str, con: sqlite3.Connection,
                  m: dict[str, Any]) -> dict[str, list[int]]:
  """Checks every example as training reads it; label histograms by split."""
  dim, classes = m['input_dim'], m['num_classes']
  spec = feature_spec(dim)
  histograms = {
      split: np.zeros(classes, dtype=np.int64) for split in (_TRAIN, _TEST)
  }
  # Split and size are tested by SQLite, so that no row is decoded in
  # Python and no oversized blob is loaded.
  cursor = con.execute(
      "SELECT rowid, IFNULL(split_name = 'train', 0), IFNULL(split_name = "
      "'test', 0), label, CASE WHEN typeof(serialized_example_proto) = "
      "'blob' AND length(serialized_example_proto) <= ? THEN "
      'serialized_example_proto END FROM examples ORDER BY rowid',
      (4 * dim + _EXAMPLE_SLACK_BYTES,))
  batch = max(1, min(_SCAN_ROWS, _SCAN_FEATURE_BYTES // (4 * dim)))
  while rows := cursor.fetchmany(batch):
    y, is_train = _check_rows(path, con, rows, spec, m)
    histograms[_TRAIN] += np.bincount(y[is_train], minlength=classes)
    histograms[_TEST] += np.bincount(y[~is_train], minlength=classes)
  return {split: h.tolist() for split, h in histograms.items()}

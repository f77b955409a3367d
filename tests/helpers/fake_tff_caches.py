"""Writers of TFF's benchmark cache files, for fake caches in the real format.

TFF's published .sqlite files hold tables `examples` (split, client id, a
serialized tf.train.Example) and `client_metadata` (client id, split, number
of examples); TFF's SqlClientData and tff-dp's reader both read that layout.
The example makers give the features of EMNIST and CIFAR-100 records.
"""

import sqlite3

import numpy as np
import tensorflow as tf


def feature(value) -> tf.train.Feature:
  """A tf.train.Feature holding `value` (bytes, int, or an array)."""
  if isinstance(value, bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
  if isinstance(value, int):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  array = np.asarray(value)
  if array.dtype.kind == 'f':
    return tf.train.Feature(float_list=tf.train.FloatList(
        value=array.ravel().tolist()))
  return tf.train.Feature(int64_list=tf.train.Int64List(
      value=array.ravel().tolist()))


def write_database(path: str, splits: dict[str, dict[str, list[dict]]]):
  """Writes a database in the layout of TFF's published .sqlite files."""
  con = sqlite3.connect(path)
  con.execute('CREATE TABLE examples (split_name TEXT NOT NULL, client_id '
              'TEXT NOT NULL, serialized_example_proto BLOB NOT NULL)')
  con.execute('CREATE TABLE client_metadata (client_id TEXT NOT NULL, '
              'split_name TEXT NOT NULL, num_examples INTEGER NOT NULL)')
  for split, clients in splits.items():
    for client_id, examples in clients.items():
      for example in examples:
        proto = tf.train.Example(features=tf.train.Features(feature={
            k: feature(v) for k, v in example.items()
        }))
        con.execute('INSERT INTO examples VALUES (?, ?, ?)',
                    (split, client_id, proto.SerializeToString()))
      con.execute('INSERT INTO client_metadata VALUES (?, ?, ?)',
                  (client_id, split, len(examples)))
  con.commit()
  con.close()


def emnist_example(rng, num_classes):
  """A random EMNIST record: 28x28 float pixels and a label."""
  return {
      'pixels': rng.random((28, 28)).astype(np.float32),
      'label': int(rng.integers(num_classes))
  }


def cifar_example(rng):
  """A random CIFAR-100 record: a 32x32x3 image, coarse and fine labels."""
  return {
      'coarse_label': int(rng.integers(20)),
      'image': rng.integers(0, 256, (32, 32, 3)),
      'label': int(rng.integers(100))
  }

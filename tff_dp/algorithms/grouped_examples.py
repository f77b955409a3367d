"""The TF side of a group's examples: held in the group, or read from client files.

Part of grouped DP-FedAvg's client work (McMahan et al. 2018, "Learning
Differentially Private Recurrent Language Models", ICLR;
`tff_dp.algorithms.grouped_client_work`). In client-files mode the TFF
worker reads each simulated client's examples from the raw files that
`tff_dp.algorithms.grouped_data.write_client_files` wrote, checked against
the client's size so that files of another data set fail loudly.
"""

import os

import tensorflow as tf

from tff_dp.algorithms.grouped_data import CLIENT
from tff_dp.algorithms.grouped_data import LENGTH
from tff_dp.algorithms.grouped_data import VALID
from tff_dp.algorithms.grouped_data import X
from tff_dp.algorithms.grouped_data import Y


def group_examples(group, *, input_dim, client_files_dir):
  """(x, y) of every slot, client after client, as a dense group holds them.

  In client-files mode each valid slot's files are read (and checked
  against its size) and concatenated; padding slots add nothing.
  """
  if client_files_dir is None:
    return group[X], group[Y]
  valid = group[VALID]
  first_row = tf.cumsum(group[LENGTH], exclusive=True)
  xs = tf.TensorArray(tf.float32,
                      size=0,
                      dynamic_size=True,
                      infer_shape=False,
                      element_shape=[None, input_dim])
  ys = tf.TensorArray(tf.int32,
                      size=0,
                      dynamic_size=True,
                      infer_shape=False,
                      element_shape=[None])
  for i in tf.range(tf.shape(valid)[0]):
    x, y = tf.cond(
        valid[i],
        lambda: client_examples(group,
                                first_row,
                                i,
                                input_dim=input_dim,
                                label_shape=[],
                                client_files_dir=client_files_dir)[:2], lambda:
        (tf.zeros([0, input_dim]), tf.zeros([0], tf.int32)))
    xs = xs.write(i, x)
    ys = ys.write(i, y)
  return (tf.reshape(xs.concat(),
                     [-1, input_dim]), tf.reshape(ys.concat(), [-1]))


def read_client_file(client_files_dir, kind, client, dtype):
  """One of `grouped_data.write_client_files`' files, decoded."""
  name = tf.strings.join([
      os.path.join(client_files_dir, kind),
      tf.strings.as_string(client), '.bin'
  ])
  return tf.io.decode_raw(tf.io.read_file(name), dtype)


def client_examples(group, first_row, i, *, input_dim, label_shape,
                    client_files_dir):
  """(x, y, row of client i's example 0 in them)."""
  if client_files_dir is None:
    return group[X], group[Y], first_row[i]
  length = group[LENGTH]
  client_x = tf.reshape(
      read_client_file(client_files_dir, 'x', group[CLIENT][i], tf.float32),
      [-1, input_dim])
  # Next-token labels: one id per position of the window.
  client_y = tf.reshape(
      read_client_file(client_files_dir, 'y', group[CLIENT][i], tf.int32),
      [-1] + label_shape)
  # Files of another data set (or a truncated file) must fail loudly.
  checks = [
      tf.debugging.assert_equal(
          tf.shape(client_y)[0],
          length[i],
          message='client file does not match the client size'),
      tf.debugging.assert_equal(
          tf.shape(client_x)[0],
          length[i],
          message='client file does not match the client size')
  ]
  with tf.control_dependencies(checks):
    return tf.identity(client_x), tf.identity(client_y), 0

"""TFF 0.87's worker runs TensorFlow's oneDNN kernels by default.

benchmarks/README.md ("The TFF worker against the same graph in-process")
rules out oneDNN as the cause of the worker's slower CNN compute: the worker
binary carries TensorFlow 2.14 with oneDNN, on unless
TF_ENABLE_ONEDNN_OPTS=0, as the pip TensorFlow in our process (and with it
off the worker ran the W2 client graph 1.46x slower). If a TFF upgrade ships
a worker with oneDNN off by default, this test fails, and
`worker_launch` should then turn it on for the worker.
"""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.execution import runtime

_ONEDNN_ON = 'oneDNN custom operations are on'


@pytest.mark.tff
def test_the_worker_runs_with_onednn_on_by_default(tmp_path, monkeypatch):
  # The worker logs the oneDNN state at INFO; ours passes the environment on.
  monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '0')
  monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
  log_path = os.path.join(tmp_path, 'worker.log')

  @tff.tensorflow.computation(tf.TensorSpec([1, 8, 8, 1], tf.float32))
  def conv(x):
    return tf.nn.conv2d(x, tf.ones([3, 3, 1, 2]), strides=1, padding='VALID')

  with runtime.local_runtime(log_path=log_path):
    out = conv(np.ones([1, 8, 8, 1], np.float32))
  np.testing.assert_allclose(out, np.full([1, 6, 6, 2], 9.0))
  with open(log_path, encoding='utf-8', errors='replace') as f:
    assert _ONEDNN_ON in f.read()

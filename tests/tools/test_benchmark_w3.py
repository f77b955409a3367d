"""W3 of the benchmark (issue 20): the floor computes tff-dp's transformer.

The floor (`benchmarks.floor`) writes tff-dp's transformer as plain
TensorFlow over the weight tensors; these checks pin it to the Keras model
tff-dp trains (`tff_dp.models.transformer`), and the plan to full mode only.
"""

import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.helpers import REPO_ROOT

# `python -m pytest` from the root puts it on sys.path; bare `pytest` does not.
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import floor
from benchmarks import language_model
from benchmarks import run_all
from benchmarks import workloads
from tff_dp.models import transformer

# pylint: enable=g-import-not-at-top,wrong-import-position


def test_w3_runs_in_full_mode_only_with_its_floor_in_turn():
  assert language_model.plan_job(True, 'benchmarks.rounds') is None
  jobs = {job['name']: job for job in run_all.plan(quick=False)}
  assert language_model.JOB not in {
      job['name'] for job in run_all.plan(quick=True)
  }
  rows = jobs[language_model.JOB]['spec']['rows']
  assert [(row['workload']['name'], row['paired_floor']) for row in rows
         ] == [('W3-c20', ['loop']), ('W3-c20-lora', [])]
  w3 = workloads.Workload.from_json(rows[0]['workload'])
  assert (w3.clients, w3.examples_per_client, w3.batch_size) == (20, 64, 16)
  data = workloads.synthetic_data(w3)
  assert data.x.shape == data.y.shape == (20, 64, workloads.TOKEN_WINDOW)
  np.testing.assert_array_equal(data.x[..., 1:], data.y[..., :-1])


@pytest.mark.slow
def test_floor_forward_is_tff_dps_transformer():
  # ~3 s: the default 2 x 256 transformer, built twice.
  sizes = dict(workloads.TRANSFORMER_SIZES)
  model = transformer.build_transformer(vocab_size=workloads.TOKEN_VOCAB_SIZE,
                                        sequence_length=workloads.TOKEN_WINDOW,
                                        num_layers=sizes['transformer_layers'],
                                        width=sizes['transformer_width'],
                                        num_heads=sizes['transformer_heads'],
                                        ff_width=sizes['transformer_ff_width'],
                                        seed=0)
  weights = floor.initial_weights(workloads.ModelName.TRANSFORMER, 0)
  ids = np.random.default_rng(0).integers(0,
                                          workloads.TOKEN_VOCAB_SIZE,
                                          size=(2, workloads.TOKEN_WINDOW))
  expected = model(tf.constant(ids, tf.int32)).numpy()
  got = floor._transformer_forward(  # pylint: disable=protected-access
      [tf.constant(w) for w in weights], ids.astype(np.float32), True,
      None).numpy()
  np.testing.assert_allclose(got, expected, atol=2e-5)

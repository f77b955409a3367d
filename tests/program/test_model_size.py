"""What `tff_dp.program.model_size` reports as sent (`--trainable`).

Pure arithmetic on the counts: whether the frozen tensors are broadcast
every round (TFF's default distributor) or reach each client once (both
paths' processes, `tff_dp.algorithms.grouped_frozen`) is read from a
process's broadcasts, tested in tests/models/test_trainable_process.py and
tests/algorithms/test_grouped_language_model.py (slow); here only on
stand-in processes that broadcast one value of a given type.
"""

import types

import numpy as np
import tensorflow_federated as tff

from tff_dp.program import model_size


def test_frozen_sent_once_moves_them_out_of_the_round_download():
  every_round = model_size.ModelSize(trainable='lora',
                                     trainable_parameters=10,
                                     frozen_parameters=90)
  once = model_size.ModelSize(trainable='lora',
                              trainable_parameters=10,
                              frozen_parameters=90,
                              frozen_every_round=False)
  assert every_round.download_bytes == 400
  assert every_round.one_time_download_bytes == 0
  assert once.download_bytes == once.upload_bytes == 40
  assert once.one_time_download_bytes == 360
  assert once.to_json()['frozen_sent'] == 'once'
  assert once.to_json()['one_time_download_bytes_per_client'] == 360
  assert every_round.to_json()['frozen_sent'] == 'every round'
  assert once.console_line().endswith(
      'download 40 bytes (the frozen tensors, 360 bytes, once, with the '
      'client computation)')
  assert 'download 400 bytes' in every_round.console_line()
  assert 'once' not in every_round.console_line()
  sent = once.statement_lines(noised=True)[-1]
  assert 'download 40 bytes' in sent and '360 bytes, reach each client once' in (
      sent)
  assert 'every round' in every_round.statement_lines(noised=False)[-1]


def _process_broadcasting(value_type, weights_type):
  """A stand-in process whose `next` broadcasts one value of `value_type`."""

  @tff.federated_computation(tff.FederatedType(value_type, tff.SERVER))
  def next_fn(value):
    return tff.federated_broadcast(value)

  return types.SimpleNamespace(
      next=next_fn,
      get_model_weights=types.SimpleNamespace(
          type_signature=types.SimpleNamespace(result=weights_type)))


def test_frozen_are_found_sent_or_not_inside_a_broadcast_struct():
  # The grouped round broadcasts ONE struct (hyperparameters, trainable
  # tensors, sample params); the whole weights in it would mean frozen sent.
  trainable = tff.StructWithPythonType([tff.TensorType(np.float32, [3])], tuple)
  frozen = tff.StructWithPythonType([tff.TensorType(np.float32, [5])], tuple)
  weights = tff.StructType([('trainable', trainable),
                            ('non_trainable', frozen)])
  hparams = tff.StructType([('learning_rate', tff.TensorType(np.float32))])
  trainable_only = tff.StructType([('hparams', hparams),
                                   ('weights', trainable)])
  whole = tff.StructType([('hparams', hparams), ('weights', weights)])
  assert not model_size.frozen_broadcast_each_round(
      _process_broadcasting(trainable_only, weights))
  assert model_size.frozen_broadcast_each_round(
      _process_broadcasting(whole, weights))
  assert not model_size.frozen_broadcast_each_round(
      _process_broadcasting(trainable, weights))

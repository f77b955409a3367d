"""What `tff_dp.program.model_size` reports as sent (`--trainable`).

Pure arithmetic on the counts: whether the frozen tensors are broadcast
every round (TFF's default distributor) or reach each client once (both
paths' processes, `tff_dp.algorithms.grouped_frozen`) is read from a
process's broadcasts, tested in tests/models/test_trainable_process.py and
tests/algorithms/test_grouped_language_model.py.
"""

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

"""benchmarks.batch_rate: its one-client rounds carry exactly the round's
examples (else their ratio to the floor would not bound the same arithmetic),
and its arguments stop with one line."""

import pytest

from benchmarks import batch_rate
from benchmarks import workloads as workloads_lib


def test_one_client_holds_every_example_of_the_round():
  w2 = next(
      w for w in workloads_lib.timing_workloads(False) if w.name == 'W2-c20')
  one = batch_rate.one_client(w2, 256)
  assert (one.clients, one.batch_size) == (1, 256)
  assert one.examples_per_client * one.epochs == (w2.clients *
                                                  w2.examples_per_client *
                                                  w2.epochs)
  assert (one.model, one.epochs) == (w2.model, w2.epochs)


@pytest.mark.parametrize('argv, named', [
    (['--workload=W9'], "'W9'"),
    (['--batches=16,x'], "'16,x'"),
    (['--batches=0'], "'0'"),
    (['--timed=0'], '0'),
])
def test_bad_arguments_stop_with_one_line(argv, named, capsys):
  assert batch_rate.main(['batch_rate'] + argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and named in err


def test_a_tiny_run_times_the_floor_and_each_batch(tmp_path):
  result = batch_rate.run('W1-c10', [16, 640], timed=1)
  assert set(result['rows']) == {'floor', 'one_client_b16', 'one_client_b640'}
  assert result['examples_per_round'] == 640
  assert result['rows']['floor']['against_floor'] == 1.0
  assert all(row['median'] > 0 for row in result['rows'].values())

"""benchmarks.worker_graph: its ways and cases, and that `session_tff` runs
the very graph the worker runs (else its ratio to `worker` would not isolate
the worker binary, as benchmarks/README.md reads it)."""

import numpy as np
import pytest
import tensorflow_federated as tff

from benchmarks import tff_session
from benchmarks import worker_graph
from benchmarks import worker_graph_cases as graph_cases


def test_worker_ways_become_the_workers_environment():
  assert worker_graph.worker_environment('worker') == {}
  assert worker_graph.worker_environment(
      'worker:TF_ENABLE_ONEDNN_OPTS=0,MALLOC_TRIM_THRESHOLD_=1') == {
          'TF_ENABLE_ONEDNN_OPTS': '0',
          'MALLOC_TRIM_THRESHOLD_': '1'
      }
  for bad in ('worker:', 'worker:A', 'worker:=1'):
    with pytest.raises(ValueError, match=repr(bad)):
      worker_graph.worker_environment(bad)


@pytest.mark.parametrize('argv, named', [
    (['--ways=worker;bogus'], "'bogus'"),
    (['--graphs=chain,nothing'], "'nothing'"),
    (['--graphs=identity_0'], "'identity_0'"),
    (['--graphs=identity_x'], "'identity_x'"),
    (['--rounds=0'], '0'),
    (['--graphs=w2_fedavg', '--ways=tf_function'], "'tf_function'"),
])
def test_bad_arguments_stop_with_one_line(argv, named, capsys):
  assert worker_graph.main(['worker_graph', *argv]) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and named in err, err


def test_identity_cases_carry_the_megabytes_they_name():
  (case,) = graph_cases.cases(['identity_9.6'])
  arrays = case.argument(0)
  assert len(arrays) == 4
  assert sum(a.nbytes for a in arrays) == pytest.approx(9.6e6, rel=1e-6)


@pytest.mark.tff
def test_session_tff_runs_the_graph_the_worker_runs(tff_runtime):
  del tff_runtime  # Installs the worker's context.
  (case,) = graph_cases.cases(['chain_io'])
  comp = tff.tensorflow.computation(case.fn, case.spec)
  block = tff_session.compiled_block(comp)
  # TFF's compiler ran Grappler on the block: it is not the traced graph.
  traced = tff.framework.ConcreteComputation.get_proto(comp).tensorflow
  assert block.graph_def != traced.graph_def
  argument = case.argument(0)
  on_worker = comp(argument)
  for grappler in (False, True):
    call, session = tff_session.session_runner(
        block, tff_session.tff_session_config(grappler))
    with session:
      np.testing.assert_allclose(call(argument), on_worker, rtol=1e-5)
  assert not np.allclose(on_worker, argument)  # The chain computed.

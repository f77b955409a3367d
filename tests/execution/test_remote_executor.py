"""tff_dp.execution.remote_executor: the same messages as TFF's, fewer of them.

`serialize_into` must build, byte for byte, the message TFF's
`value_serialization.serialize_value` builds, on the values tff-dp sends (the
learning processes' states, grouped round inputs) and on the edge cases of the
format (empty structs, scalars, strings, unnamed elements, empty CLIENTS
lists, Python lists as tensors). `CachingRemoteExecutor` must send a
computation once per executor and give the results TFF's executor gives.
`GuardedStub` must end a call on a dead or unreachable worker with one
error that TFF does not retry, and leave the worker's own answers alone.
"""

import collections
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import executor_pb2
from tensorflow_federated.python.core.impl.executors import executors_errors
from tensorflow_federated.python.core.impl.executors import value_serialization

from tests.helpers import REPO_ROOT
from tests.helpers import central_dp
from tff_dp.algorithms import grouped_data
from tff_dp.algorithms import grouped_fedavg
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer
from tff_dp.execution import remote_executor
from tff_dp.execution import runtime
from tff_dp.execution import worker_errors
from tff_dp.execution import worker_process

pytestmark = pytest.mark.tff

_D, _C, _HIDDEN = 5, 3, 4


def _ours(value, type_spec) -> bytes:
  out = executor_pb2.Value()
  remote_executor.serialize_into(value, type_spec, out)
  return out.SerializeToString(deterministic=True)


def _tffs(value, type_spec) -> bytes:
  proto, _ = value_serialization.serialize_value(value, type_spec)
  return proto.SerializeToString(deterministic=True)


_F32 = np.float32
_CASES = {
    'matrix': (np.arange(6, dtype=_F32).reshape(2, 3),
               tff.TensorType(np.float32, [2, 3])),
    'unknown dim': (np.arange(4,
                              dtype=np.int32), tff.TensorType(np.int32,
                                                              [None])),
    'scalar array': (np.float32(2.5), tff.TensorType(np.float32)),
    'python scalar': (3, tff.TensorType(np.int64)),
    'bool': (np.array([True, False]), tff.TensorType(np.bool_, [2])),
    'string': (np.array([b'a', b'bc']), tff.TensorType(np.str_, [2])),
    'list as tensor': ([1.0, 2.0], tff.TensorType(np.float32, [2])),
    'empty struct': ((), tff.StructType([])),
    'named struct': (collections.OrderedDict(a=np.ones(2, _F32), b=np.int32(1)),
                     tff.StructType([('a', tff.TensorType(np.float32, [2])),
                                     ('b', tff.TensorType(np.int32))])),
    'unnamed nested': ([np.ones(2, _F32), (np.zeros(1, _F32), ())],
                       tff.StructType([
                           tff.TensorType(np.float32, [2]),
                           tff.StructType([
                               tff.TensorType(np.float32, [1]),
                               tff.StructType([])
                           ])
                       ])),
    'server': (np.ones(3, _F32),
               tff.FederatedType(tff.TensorType(np.float32, [3]), tff.SERVER)),
    'clients': ([np.ones(2, _F32), np.zeros(2, _F32)],
                tff.FederatedType(tff.TensorType(np.float32, [2]),
                                  tff.CLIENTS)),
    'no clients':
        ([], tff.FederatedType(tff.TensorType(np.float32, [2]), tff.CLIENTS)),
}


@pytest.mark.parametrize('name', sorted(_CASES))
def test_same_bytes_as_tff_on_edge_cases(name):
  value, type_spec = _CASES[name]
  assert _ours(value, type_spec) == _tffs(value, type_spec)


@pytest.mark.parametrize('value, type_spec', [
    (np.ones(3, _F32), tff.TensorType(np.float32, [4])),
    (np.ones(3, np.int32), tff.TensorType(np.float32, [3])),
    (np.ones(3, np.float64), tff.TensorType(np.float32, [3])),
    ((np.ones(1, _F32),), tff.StructType(
        [tff.TensorType(np.float32, [1])] * 2)),
    (np.ones(1, _F32),
     tff.FederatedType(tff.TensorType(np.float32, [1]), tff.CLIENTS)),
])
def test_mismatches_raise_what_tff_raises(value, type_spec):
  with pytest.raises(Exception) as theirs:
    value_serialization.serialize_value(value, type_spec)
  with pytest.raises(type(theirs.value)):
    _ours(value, type_spec)


def _dp():
  return central_dp.settings(DpMechanism.GAUSSIAN_ADAPTIVE,
                             noise_multiplier=0.1,
                             clients_per_round=3,
                             clip=1.0)


def _optimizer():
  return learning_process.build_server_optimizer(ServerOptimizer.SGD,
                                                 learning_rate=1.0,
                                                 momentum=0.9)


def _processes():
  reference = learning_process.build_learning_process(
      model_fn=models.build_model_fn(ModelKind.MLP,
                                     input_dim=_D,
                                     num_classes=_C,
                                     hidden_units=_HIDDEN,
                                     seed=1),
      model_aggregator=learning_process.build_model_aggregator(
          dp=_dp(), client_weighting=ClientWeighting.UNIFORM),
      client_learning_rate=0.1,
      client_momentum=0.0,
      server_optimizer=_optimizer())
  grouped = grouped_fedavg.build_grouped_dp_fedavg(
      keras_model_fn=lambda: models.build_keras_model(ModelKind.MLP,
                                                      input_dim=_D,
                                                      num_classes=_C,
                                                      hidden_units=_HIDDEN,
                                                      seed=1),
      input_dim=_D,
      num_classes=_C,
      dp_factory=learning_process.build_dp_aggregator(_dp()),
      client_learning_rate=0.1,
      client_momentum=0.0,
      server_optimizer=_optimizer(),
      batch_size=2,
      epochs=1)
  return reference, grouped


def test_same_bytes_as_tff_on_process_states_and_round_inputs(tff_runtime):
  del tff_runtime
  reference, grouped = _processes()
  rng = np.random.default_rng(0)
  xs = [rng.normal(size=(n, _D)).astype(_F32) for n in (3, 1, 4)]
  ys = [rng.integers(0, _C, size=n).astype(np.int32) for n in (3, 1, 4)]
  for process in (reference, grouped):
    state = process.initialize()
    state_type = process.next.type_signature.parameter[0]
    assert _ours(state, state_type) == _tffs(state, state_type)
    # After a round the state holds trained weights and a DP event.
    if process is grouped:
      groups = grouped_data.make_groups(xs,
                                        ys, [0, 1, 2],
                                        round_num=0,
                                        seed=0,
                                        epochs=1,
                                        group_size=2)
      data_type = process.next.type_signature.parameter[1]
      assert _ours(groups, data_type) == _tffs(groups, data_type)
      state = process.next(state, groups).state
      assert _ours(state, state_type) == _tffs(state, state_type)


class _CountingStub:
  """Wraps a gRPC stub, counting CreateValue requests that carry computations."""

  def __init__(self, stub):
    self._stub = stub
    self.computations_sent = 0

  def create_value(self, request):
    if request.value.WhichOneof('value') == 'computation':
      self.computations_sent += 1
    return self._stub.create_value(request)

  def __getattr__(self, name):
    return getattr(self._stub, name)


def test_a_computation_is_sent_once_and_results_are_unchanged(tff_runtime):
  channel = grpc.insecure_channel(tff_runtime.target)
  stub = _CountingStub(tff.framework.RemoteExecutorGrpcStub(channel))
  context = runtime.execution_context(stub)

  @tff.tensorflow.computation(tff.TensorType(np.float32, [3]))
  def scale(x):
    return x * 2.0

  @tff.federated_computation(
      tff.FederatedType(tff.TensorType(np.float32, [3]), tff.CLIENTS))
  def total(values):
    return tff.federated_sum(tff.federated_map(scale, values))

  values = [np.array([1, 2, 3], _F32), np.array([0.5, 0, -1], _F32)]
  expected = total(values)  # On tff-dp's default context.
  with tff.framework.get_context_stack().install(context):
    results = [total(values) for _ in range(3)]
    assert stub.computations_sent == 1
    # Another cardinality is another executor on the worker: sent again there.
    results.append(total(values[:1]))
    assert stub.computations_sent == 2
  for result in results[:3]:
    np.testing.assert_array_equal(result, expected)
  np.testing.assert_array_equal(results[3], values[0] * 2)
  np.testing.assert_array_equal(expected, np.array([3, 4, 4], _F32))
  channel.close()


_CHILD = r'''
import sys
import numpy as np
import tensorflow_federated as tff
from tff_dp.execution import runtime

def scaler(k):
  return tff.tensorflow.computation(lambda x: x * float(k),
                                    tff.TensorType(np.float32, [2]))

# More computations than TFF's dispose batch (20): disposing of their values
# at exit would make an RPC.
computations = [scaler(k) for k in range(25)]
with runtime.local_runtime(log_path=sys.argv[1]):
  for _ in range(2):
    results = [float(c(np.ones(2, np.float32))[0]) for c in computations]
print('sum', sum(results), flush=True)
'''


def test_cached_values_do_not_outlive_the_worker_noisily(tmp_path):
  # A cached computation value is still referenced when the interpreter
  # exits, after local_runtime stopped the worker; disposing of it then
  # would print a gRPC traceback on the user's terminal.
  child = subprocess.run(
      [sys.executable, '-c', _CHILD,
       str(tmp_path / 'worker.log')],
      cwd=REPO_ROOT,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'),
      capture_output=True,
      text=True,
      timeout=300,
      check=False)
  assert child.returncode == 0, child.stderr
  assert 'sum 300.0' in child.stdout
  assert 'Traceback' not in child.stderr, child.stderr


class _FakeExecutor:

  def __init__(self, cardinalities):
    self.cardinalities = dict(cardinalities)
    self.closed = False

  def close(self):
    self.closed = True


def test_closing_factory_closes_what_it_drops_least_recent_first():
  made = []

  def stack_fn(cardinalities):
    made.append(_FakeExecutor(cardinalities))
    return made[-1]

  factory = remote_executor.ClosingExecutorFactory(stack_fn, max_executors=2)
  one = factory.create_executor({tff.CLIENTS: 1})
  two = factory.create_executor({tff.CLIENTS: 2})
  assert factory.create_executor({tff.CLIENTS: 1}) is one  # Now most recent.
  three = factory.create_executor({tff.CLIENTS: 3})
  assert two.closed and not one.closed and not three.closed
  factory.clean_up_executor({tff.CLIENTS: 3})
  assert three.closed
  again = factory.create_executor({tff.CLIENTS: 2})
  assert again is not two and len(made) == 4
  factory.clean_up_executor({tff.CLIENTS: 1})
  factory.clean_up_executor({tff.CLIENTS: 2})
  assert all(e.closed for e in made)
  with pytest.raises(ValueError, match='max_executors'):
    remote_executor.ClosingExecutorFactory(stack_fn, max_executors=0)


def test_many_cohort_sizes_on_the_worker_give_right_results(tff_runtime):
  # More cohort sizes than the factory keeps open: dropped executors are
  # closed on the worker and re-created when their size comes back.
  del tff_runtime

  @tff.federated_computation(
      tff.FederatedType(tff.TensorType(np.float32, [2]), tff.CLIENTS))
  def total(values):
    return tff.federated_sum(values)

  for n in list(range(1, 13)) + [1, 2]:
    values = [np.full(2, k, _F32) for k in range(n)]
    np.testing.assert_array_equal(total(values),
                                  np.full(2,
                                          n * (n - 1) / 2, _F32))


# --- A worker that fails ends the run (GuardedStub, worker_process.Worker). -


class _FakeRpcError(grpc.RpcError, grpc.Call):
  """A failed call, as gRPC raises it."""

  def __init__(self, code: grpc.StatusCode):
    super().__init__()
    self._code = code

  def code(self):
    return self._code

  def details(self):
    return f'fake {self._code.name}'


class _FailingStub:
  """TFF's stub to a worker that fails every call with `error`."""

  def __init__(self, error: Exception):
    self.error = error
    self.calls = 0

  def __getattr__(self, name):

    def call(request):
      del request
      self.calls += 1
      raise self.error

    return call


@pytest.fixture(name='stand_in')
def _stand_in(tmp_path):
  """A worker_process.Worker around a process that is not a TFF worker."""
  process = subprocess.Popen(['sleep', '600'])
  worker = worker_process.Worker(process, 0, str(tmp_path / 'worker.log'))
  yield worker
  worker.stop()


def _invoke_in_thread(context, timeout: float):
  """Runs a computation on `context`; returns what it raised, or fails."""
  outcome = {}

  @tff.tensorflow.computation(np.int32)
  def add_one(x):
    return x + 1

  def run():
    with tff.framework.get_context_stack().install(context):
      try:
        outcome['result'] = add_one(1)
      except BaseException as e:  # pylint: disable=broad-except
        outcome['error'] = e

  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  thread.join(timeout)
  assert not thread.is_alive(), f'the call still waits after {timeout} s'
  return outcome.get('error')


def test_a_live_worker_that_keeps_refusing_calls_ends_the_run(
    stand_in, monkeypatch):
  # TFF's execution context retries UNAVAILABLE forever (with back-off);
  # the guarded stub turns a streak of them into an error TFF does not retry.
  monkeypatch.setattr(worker_process, '_UNREACHABLE_SECONDS', 1.0)
  monkeypatch.setattr(worker_process, '_DEATH_GRACE_SECONDS', 0.05)
  failing = _FailingStub(
      executors_errors.RetryableGRPCError(
          _FakeRpcError(grpc.StatusCode.UNAVAILABLE)))
  context = runtime.execution_context(
      remote_executor.GuardedStub(failing, stand_in.diagnose))
  start = time.monotonic()
  error = _invoke_in_thread(context, timeout=60)
  assert isinstance(error, worker_errors.WorkerUnreachableError), repr(error)
  assert f'pid {stand_in.pid}' in str(error) and 'UNAVAILABLE' in str(error)
  assert failing.calls > 1  # TFF did retry, for a while.
  assert time.monotonic() - start < 30


def test_an_error_the_worker_answers_with_passes_through_at_once(stand_in):
  # E.g. a failed TF op (INTERNAL): the worker is fine, the caller sees the
  # RPC error (tests/algorithms/test_grouped_fedavg.py relies on it) without
  # delay.
  answered = _FakeRpcError(grpc.StatusCode.INTERNAL)
  stub = remote_executor.GuardedStub(_FailingStub(answered), stand_in.diagnose)
  start = time.monotonic()
  with pytest.raises(_FakeRpcError) as raised:
    stub.create_value(executor_pb2.CreateValueRequest())
  assert raised.value is answered
  assert time.monotonic() - start < 1.0


def test_calls_on_a_dead_worker_raise_and_disposals_are_quiet(stand_in):
  failing = _FailingStub(_FakeRpcError(grpc.StatusCode.UNAVAILABLE))
  stub = remote_executor.GuardedStub(failing, stand_in.diagnose)
  stand_in.process.send_signal(signal.SIGKILL)
  stand_in.process.wait(timeout=30)
  with pytest.raises(worker_errors.WorkerDiedError) as died:
    stub.compute(executor_pb2.ComputeRequest())
  message = str(died.value)
  assert f'pid {stand_in.pid}' in message
  assert 'killed by signal 9 (SIGKILL)' in message
  assert stand_in.log_path in message and '\n' not in message
  # Values died with the worker: nothing to free, nothing to print.
  assert stub.dispose(
      executor_pb2.DisposeRequest()) == (executor_pb2.DisposeResponse())
  assert stub.dispose_executor(executor_pb2.DisposeExecutorRequest()) == (
      executor_pb2.DisposeExecutorResponse())
  assert failing.calls == 0

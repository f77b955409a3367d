"""TFF's remote execution without per-round re-sending, re-copying or leaks.

Every `process.next(state, data)` on TFF's execution context (TFF 0.87,
`tff.framework.SyncExecutionContext` over `tff.framework.RemoteExecutor`)
does two things whose cost does not depend on the clients of the round:

1. It creates the computation as a value on the worker again
   (`_invoke` in TFF's async_execution_context calls `create_value(comp)`
   on every invocation): the whole compiled computation proto (~300 KB for
   DP-FedAvg on the 784-128-10 MLP) is copied, sent over gRPC and
   parsed by the worker, round after round, though it never changes.
2. It serializes the arguments with `value_serialization.serialize_value`,
   which builds each nested struct from already-built child protos, so every
   tensor is copied once per nesting level of the state (model weights sit
   three to four levels deep): ~4-7 ms per round for the 0.8 MB of weights
   and server momentum of W1 (`benchmarks.where_time_goes`-style timing).

`CachingRemoteExecutor` keeps TFF's protocol and messages and changes only
how they are produced:

* a computation value is created ONCE per executor and its remote value
  reused for later calls of the same computation object (TFF's compiler
  pipeline returns the same compiled object for the same computation). The
  worker keeps the value alive as long as this executor holds its
  `RemoteValue`; an executor is per cardinality (TFF's
  `ResourceManagingExecutorFactory`), so a cached value never crosses
  executors;
* other values are serialized in one pass into the request's proto, each
  tensor's bytes copied once (`serialize_into`). The message is byte-for-byte
  the one TFF's `serialize_value` builds
  (tests/execution/test_remote_executor.py checks it on the states of the
  processes tff-dp builds); sequences, computations and anything unusual fall
  back to TFF's own serializer.

The worker receives the same requests as before, minus repeated
`CreateValue` calls for the computation, so results are unchanged.

A third cost grows with the run instead: TFF's
`ResourceManagingExecutorFactory` keeps one executor per cardinality (number
of TFF clients) in an LRU cache of 10 and, when it drops one, does not close
it, so the worker keeps that executor's stack and values for good. With
Poisson sampling on TFF's one-client-per-call path the cohort size changes
almost every round: the worker grew by ~7.5 MiB per round (809 MiB after 60
rounds of `configs/default.cfg` with `--clients_per_call=1`).
`ClosingExecutorFactory` is the same per-cardinality factory, but closes the
executors it drops, which frees them on the worker.

Last, TFF's execution context retries every call that fails with a gRPC
UNAVAILABLE or FAILED_PRECONDITION, forever (`AsyncExecutionContext.invoke`
is wrapped in `retrying.retry` with no limit): when the worker dies, each
retry fails at once and is retried, and the run hangs. `GuardedStub` wraps
TFF's gRPC stub and asks the owner of the worker (`tff_dp.execution.worker_process.Worker`)
about every failed call: a worker that is gone, or unreachable for too long,
becomes a non-retryable error that ends the run.
"""

import collections
import time
from typing import Any, Callable, Optional

import grpc
import numpy as np
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import executor_pb2
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.impl.compiler import array
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.executors import executors_errors
from tensorflow_federated.python.core.impl.executors import remote_executor
from tensorflow_federated.python.core.impl.executors import value_serialization
from tensorflow_federated.python.core.impl.types import array_shape
from tensorflow_federated.python.core.impl.types import computation_types
from tensorflow_federated.python.core.impl.types import dtype_utils
from tensorflow_federated.python.core.impl.types import type_serialization


def _tensor_into(value: Any, type_spec: computation_types.TensorType,
                 out: executor_pb2.Value) -> None:
  """A tensor as TFF serializes it, its bytes copied into `out` once."""
  dtype = type_spec.dtype.type
  # TFF uses repeated fields (not `content`) for scalars and strings, and
  # coerces lists and tuples; those are small or rare, so they take TFF's
  # own path. What is left is numpy arrays, written exactly as
  # `array.to_proto_content` writes them.
  if (not isinstance(value, np.ndarray) or
      array_shape.is_shape_scalar(type_spec.shape) or dtype is np.str_ or
      not array.is_compatible_shape(value, type_spec.shape) or
      not array.is_compatible_dtype(value, dtype) or
      not dtype_utils.is_valid_dtype(dtype)):
    proto, _ = value_serialization.serialize_value(value, type_spec)
    out.CopyFrom(proto)
    return
  value = np.asarray(value, dtype)
  out.array.dtype = dtype_utils.to_proto(dtype)
  out.array.shape.CopyFrom(array_shape.to_proto(value.shape))
  out.array.content = value.tobytes()


def serialize_into(value: Any, type_spec: computation_types.Type,
                   out: executor_pb2.Value) -> None:
  """Writes `value` into `out` as `value_serialization.serialize_value` would.

  Args:
    value: A value of `type_spec`, as TFF's execution context ingests it.
    type_spec: Its TFF type.
    out: An empty `executor_pb2.Value`, filled in place.

  Raises:
    TypeError, ValueError, NotImplementedError: As TFF's serializer raises
      them (a mismatch between the value and its type).
  """
  if isinstance(type_spec, computation_types.TensorType):
    _tensor_into(value, type_spec, out)
  elif isinstance(type_spec, computation_types.StructType) and not isinstance(
      value, computation_impl.ConcreteComputation):
    elements = structure.from_container(value)
    if len(elements) != len(type_spec):
      # TFF's serializer words the error.
      proto, _ = value_serialization.serialize_value(value, type_spec)
      out.CopyFrom(proto)
      return
    # An empty struct is still a struct (the oneof must be set).
    out.struct.SetInParent()
    for (name,
         element_type), (_, element) in zip(structure.iter_elements(type_spec),
                                            structure.iter_elements(elements)):
      element_pb = out.struct.element.add()
      if name:
        element_pb.name = name
      serialize_into(element, element_type, element_pb.value)
  elif isinstance(type_spec, computation_types.FederatedType):
    members = [value] if type_spec.all_equal else value
    if not isinstance(members, list):
      proto, _ = value_serialization.serialize_value(value, type_spec)
      out.CopyFrom(proto)
      return
    for member in members:
      serialize_into(member, type_spec.member, out.federated.value.add())
    out.federated.type.CopyFrom(
        type_serialization.serialize_type(type_spec).federated)
  else:
    proto, _ = value_serialization.serialize_value(value, type_spec)
    out.CopyFrom(proto)


class ClosingExecutorFactory(tff.framework.ExecutorFactory):
  """An executor per cardinality, at most `max_executors`, closed when dropped.

  As TFF's `ResourceManagingExecutorFactory` (module docstring), except that
  an executor pushed out of the cache (least recently used first) or cleaned
  up is closed, so the worker disposes of it. TFF's sync execution context
  uses one executor at a time and asks the factory for it at each call, so a
  dropped executor is never in use.
  """

  def __init__(self,
               executor_stack_fn: Callable[[dict[Any, int]], Any],
               *,
               max_executors: int = 8):
    if max_executors < 1:
      raise ValueError(f'max_executors must be >= 1, got {max_executors}')
    self._executor_stack_fn = executor_stack_fn
    self._max_executors = max_executors
    self._executors: collections.OrderedDict = collections.OrderedDict()

  @staticmethod
  def _key(cardinalities: dict[Any, int]) -> tuple:
    return tuple(sorted((str(k), v) for k, v in cardinalities.items()))

  def create_executor(self, cardinalities: dict[Any, int]):
    key = self._key(cardinalities)
    executor = self._executors.get(key)
    if executor is not None:
      self._executors.move_to_end(key)
      return executor
    executor = self._executor_stack_fn(cardinalities)
    self._executors[key] = executor
    while len(self._executors) > self._max_executors:
      _, dropped = self._executors.popitem(last=False)
      dropped.close()
    return executor

  def clean_up_executor(self, cardinalities: dict[Any, int]):
    executor = self._executors.pop(self._key(cardinalities), None)
    if executor is not None:
      executor.close()


class CachingRemoteExecutor(tff.framework.RemoteExecutor):
  """A RemoteExecutor that sends each computation once (module docstring)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # id(computation) -> (computation, its RemoteValue). The computation is
    # held so that its id cannot be reused by another object.
    self._computations: dict[int, tuple[Any, Any]] = {}

  async def create_value(self,
                         value: Any,
                         type_spec: Optional[computation_types.Type] = None):
    if isinstance(value, computation_impl.ConcreteComputation):
      cached = self._computations.get(id(value))
      if cached is not None and cached[0] is value:
        return cached[1]
      proto, type_spec = value_serialization.serialize_value(value, type_spec)
      # Not disposed at interpreter exit: the worker is stopped by then
      # (`tff_dp.execution.runtime`), and a cached value lives until its executor is
      # cleared, which frees it on the worker.
      remote = self._send(lambda out: out.CopyFrom(proto),
                          type_spec,
                          dispose_at_exit=False)
      self._computations[id(value)] = (value, remote)
      return remote
    if type_spec is None or self._stream_structs:
      return await super().create_value(value, type_spec)
    return self._send(lambda out: serialize_into(value, type_spec, out),
                      type_spec)

  def _send(self,
            fill: Callable[[executor_pb2.Value], None],
            type_spec: computation_types.Type,
            *,
            dispose_at_exit: bool = True) -> remote_executor.RemoteValue:
    """Creates the value `fill` writes on the worker, as TFF's create_value."""
    self._check_has_executor_id()
    request = executor_pb2.CreateValueRequest(executor=self._executor_id)
    fill(request.value)
    response = self._stub.create_value(request)
    return remote_executor.RemoteValue(response.value_ref,
                                       type_spec,
                                       self,
                                       dispose_at_exit=dispose_at_exit)

  def _clear_executor(self):
    # `close` and `set_cardinalities` end the worker-side executor, and with
    # it the values the cache refers to.
    self._computations.clear()
    super()._clear_executor()


# Diagnoses a failed call (None: before a call) given how long calls have been
# failing in a row; returns the error to raise instead, or None.
Diagnose = Callable[[Optional[BaseException], float], Optional[Exception]]


class GuardedStub:
  """TFF's `RemoteExecutorGrpcStub`, whose worker failures end the run.

  Before each call, and after each call that fails, `diagnose` decides
  whether the worker is still usable; if not, its error (e.g.
  `tff_dp.execution.worker_errors.WorkerDiedError`, which TFF does not retry) is raised
  instead of the call's, chained to it. Requests to free values on a worker
  that is gone succeed without a call: the values went with it, and these
  requests come from finalizers, where an error would only print noise.
  """

  def __init__(self, stub: Any, diagnose: Diagnose):
    self._stub = stub
    self._diagnose = diagnose
    # When the current run of consecutive failed calls began (None: the
    # last call succeeded).
    self._failing_since: Optional[float] = None

  @property
  def is_ready(self) -> bool:
    return self._stub.is_ready

  def _call(self, name: str, request: Any, *, on_gone: Any = None) -> Any:
    error = self._diagnose(None, 0.0)
    if error is not None:
      if on_gone is not None:
        return on_gone
      raise error
    try:
      response = getattr(self._stub, name)(request)
    # ValueError: gRPC refuses calls on a channel that
    # `tff_dp.execution.worker_process` closed when the worker exited.
    except (grpc.RpcError, executors_errors.RetryableError, ValueError) as e:
      now = time.monotonic()
      if self._failing_since is None:
        self._failing_since = now
      error = self._diagnose(e, now - self._failing_since)
      if error is None:
        raise
      if on_gone is not None:
        return on_gone
      raise error from e
    self._failing_since = None
    return response

  def get_executor(self, request):
    return self._call('get_executor', request)

  def create_value(self, request):
    return self._call('create_value', request)

  def create_struct(self, request):
    return self._call('create_struct', request)

  def create_call(self, request):
    return self._call('create_call', request)

  def create_selection(self, request):
    return self._call('create_selection', request)

  def compute(self, request):
    return self._call('compute', request)

  def dispose(self, request):
    return self._call('dispose',
                      request,
                      on_gone=executor_pb2.DisposeResponse())

  def dispose_executor(self, request):
    return self._call('dispose_executor',
                      request,
                      on_gone=executor_pb2.DisposeExecutorResponse())

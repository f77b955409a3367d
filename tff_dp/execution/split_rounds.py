"""A round's cohort split across remote workers; the merge and the server's part on the driver.

TFF's `MergeableCompExecutionContext` (what
`tff.backends.native.set_mergeable_comp_execution_context` installs)
compiles a computation with one aggregation into `up_to_merge` (the
clients' work and a partial aggregate), `merge` and `after_merge` (the
server's part), slices the CLIENTS-placed argument contiguously across its
contexts and runs `up_to_merge` on each. But it runs `merge` and
`after_merge` on whichever WORKER finished last (TFF 0.87,
`_invoke_mergeable_comp_form`): the un-noised sum of every client's clipped
update would reach a worker, and the DP noise would be drawn there, from a
key that is a constant of the computation (`tff_dp.mechanisms.noise_seeds`)
and would be shipped to it. `SplitRoundsContext` keeps TFF's compiler and
slicing and changes where the rest runs:

* `up_to_merge` runs on the remote workers, one slice each, concurrently
  (one thread per worker: TFF's remote executor blocks inside its
  coroutines);
* `merge` (pairwise, in worker order) and `after_merge` (the server update,
  the DP noise, the clipping-norm update) run on the driver's own confined
  local worker (`tff_dp.execution.runtime`), once;
* a computation without CLIENTS-placed values in its argument (initialize,
  reading or setting model weights, centralized evaluation) runs entirely
  on the driver's worker.

The workers therefore see their slice of the cohort's data, the broadcast
model, and the computation up to the aggregation (no noise key); the driver
sees each worker's partial (un-noised) sum, as the central DP server does.

A worker lost mid-round (`worker_errors.WorkerError`: it died, or refused
calls for 30 s) ends the round with that error, unless the context was
given `on_worker_lost` (`--on_worker_loss=continue`). Then the round is
completed without it, and it is left out of every later round: the
surviving workers' partial sums of the same round (the same computation on
the same inputs; nothing of them was released) are kept, and the lost
worker's slice is either run again on a surviving worker (the callback
returns True: the driver holds those clients' examples) or dropped (False:
with sharded data its clients' examples were on the lost host only, and the
caller stops routing them; `tff_dp.algorithms.shard_routing`). The merge,
the noise and the server update then run once, as always: one release, one
charge. Why that is exact is the privacy statement's and the README's
("Running on several machines"): the loss must not depend on the clients'
data; the noise, the clip and the divisor are unchanged; dropping the
unreachable clients from a Poisson cohort is Poisson sampling of the
reachable ones with the same q.
"""

import asyncio
import concurrent.futures
import time
from typing import Any, Callable, Optional, Sequence

import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as mergeable
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions

from tff_dp.execution import worker_errors


def _has_clients_values(type_spec: Optional[tff.Type]) -> bool:
  """True if a parameter holds values placed at CLIENTS (not all-equal)."""
  if type_spec is None:
    return False
  return type_analysis.contains(
      type_spec, lambda t: isinstance(t, tff.FederatedType) and t.placement is
      tff.CLIENTS and not t.all_equal)


def _server_only(type_spec: tff.Type) -> bool:
  return type_analysis.contains_only(
      type_spec, lambda t: not isinstance(t, tff.FederatedType) or t.all_equal)


class SplitRoundsContext(tff.framework.SyncContext):
  """Runs computations as the module docstring says."""

  def __init__(self,
               remote_contexts: Sequence[tff.framework.AsyncContext],
               driver_context: tff.framework.AsyncContext,
               driver_sync_context: tff.framework.SyncContext,
               *,
               names: Optional[Sequence[str]] = None,
               on_worker_lost: Optional[Callable[[int, str, Exception],
                                                 bool]] = None):
    """Args:
      remote_contexts: One per remote worker, in --workers order.
      driver_context: The driver's local worker (asynchronous).
      driver_sync_context: The same, synchronous.
      names: The workers' names for messages ('host:port').
      on_worker_lost: None: a lost worker ends the round with its error.
        Else called as (worker index, name, error) when one is lost; returns
        whether its slice must run again on a surviving worker.
    """
    self._remotes = list(remote_contexts)
    self._names = list(names or [f'#{i}' for i in range(len(self._remotes))])
    self._alive = list(range(len(self._remotes)))
    self.last_up_to_merge_seconds = 0.0
    self._on_worker_lost = on_worker_lost
    self._driver = driver_context
    self._driver_sync = driver_sync_context
    self._compiler = compiler_pipeline.CompilerPipeline(
        mergeable_comp_compiler.compile_to_mergeable_comp_form)
    self._loop = asyncio.new_event_loop()
    # TFF's remote executor makes blocking gRPC calls inside its coroutines,
    # so `asyncio.gather` over the workers would run them one after another:
    # each worker's part runs in its own thread (and event loop) instead.
    self._pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=len(self._remotes), thread_name_prefix='tff-dp-split')

  @property
  def alive(self) -> list[int]:
    """Indices of the workers still in use, in --workers order."""
    return list(self._alive)

  def close(self) -> None:
    self._pool.shutdown(wait=True)
    self._loop.close()

  def invoke_on_each_worker(self, comp) -> list[Any]:
    """Runs a no-argument computation on every remote worker; the results
    in worker order (e.g. which data shard each serves)."""
    futures = [
        self._pool.submit(asyncio.run, context.invoke(comp, None))
        for context in self._remotes
    ]
    concurrent.futures.wait(futures)
    return [future.result() for future in futures]

  def invoke(self, comp, arg: Any = None):
    parameter = comp.type_signature.parameter
    if not _has_clients_values(parameter):
      return self._driver_sync.invoke(comp, arg)
    form = self._compiler.compile(comp)
    slices = mergeable.MergeableCompExecutionContextValue(
        arg, form.up_to_merge.type_signature.parameter,
        len(self._alive)).value()
    result = self._loop.run_until_complete(self._run(form, slices))
    return type_conversions.type_to_py_container(
        result, form.after_merge.type_signature.result)

  def _up_to_merge(self, form, slices: list[Any]) -> list[Any]:
    """Each slice's partial sum, on its worker; lost workers handled."""
    workers = self._alive[:len(slices)]
    futures = [
        self._pool.submit(asyncio.run,
                          self._remotes[w].invoke(form.up_to_merge, piece))
        for w, piece in zip(workers, slices)
    ]
    # Every worker's part finishes (or fails) before the first error is
    # raised: no call is left running on a worker behind our back.
    concurrent.futures.wait(futures)
    partials, rerun = [], []
    for worker, piece, future in zip(workers, slices, futures):
      error = future.exception()
      if error is None:
        partials.append((piece, future.result()))
        continue
      if (self._on_worker_lost is None or
          not isinstance(error, worker_errors.WorkerError)):
        raise error
      self._alive.remove(worker)
      if not self._alive:
        raise error
      if self._on_worker_lost(worker, self._names[worker], error):
        rerun.append(piece)
    for piece in rerun:
      # The driver holds these clients' examples: a surviving worker runs
      # them (and may be lost in turn).
      partials.extend(self._up_to_merge_on(form, piece))
    return partials

  def _up_to_merge_on(self, form, piece) -> list[Any]:
    return self._up_to_merge(form, [piece])

  async def _run(self, form, slices: list[Any]):
    start = time.perf_counter()
    partials = self._up_to_merge(form, slices)
    # Where a split round's time goes, for `benchmarks.workers`.
    self.last_up_to_merge_seconds = time.perf_counter() - start
    merged = partials[0][1]
    for _, partial in partials[1:]:
      merged = await self._driver.invoke(
          form.merge, structure.Struct.unnamed(merged, partial))
    if _server_only(form.after_merge.type_signature.result):
      # Its result cannot depend on which slice it sees (TFF's own shortcut).
      return await self._driver.invoke(
          form.after_merge, structure.Struct.unnamed(slices[0], merged))
    results = []
    for piece, _ in partials:
      results.append(await self._driver.invoke(
          form.after_merge, structure.Struct.unnamed(piece, merged)))
    return mergeable._repackage_partitioned_values(  # pylint: disable=protected-access
        results,
        result_type_spec=form.after_merge.type_signature.result)

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
"""

import asyncio
import concurrent.futures
from typing import Any, Optional, Sequence

import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler
from tensorflow_federated.python.core.impl.execution_contexts import compiler_pipeline
from tensorflow_federated.python.core.impl.execution_contexts import mergeable_comp_execution_context as mergeable
from tensorflow_federated.python.core.impl.types import type_analysis
from tensorflow_federated.python.core.impl.types import type_conversions


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

  def __init__(self, remote_contexts: Sequence[tff.framework.AsyncContext],
               driver_context: tff.framework.AsyncContext,
               driver_sync_context: tff.framework.SyncContext):
    self._remotes = list(remote_contexts)
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
        len(self._remotes)).value()
    result = self._loop.run_until_complete(self._run(form, slices))
    return type_conversions.type_to_py_container(
        result, form.after_merge.type_signature.result)

  async def _run(self, form, slices: list[Any]):
    futures = [
        self._pool.submit(asyncio.run, context.invoke(form.up_to_merge, piece))
        for context, piece in zip(self._remotes, slices)
    ]
    # Every worker's part finishes (or fails) before the first error is
    # raised: no call is left running on a worker behind our back.
    concurrent.futures.wait(futures)
    partials = [future.result() for future in futures]
    merged = partials[0]
    for partial in partials[1:]:
      merged = await self._driver.invoke(
          form.merge, structure.Struct.unnamed(merged, partial))
    if _server_only(form.after_merge.type_signature.result):
      # Its result cannot depend on which slice it sees (TFF's own shortcut).
      return await self._driver.invoke(
          form.after_merge, structure.Struct.unnamed(slices[0], merged))
    results = []
    for piece in slices:
      results.append(await self._driver.invoke(
          form.after_merge, structure.Struct.unnamed(piece, merged)))
    return mergeable._repackage_partitioned_values(  # pylint: disable=protected-access
        results,
        result_type_spec=form.after_merge.type_signature.result)

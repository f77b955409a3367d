"""Several rounds of a grouped learning process in one TFF call.

What it does: `build_fused_next(process, k, ...)` returns one computation
that runs k rounds of `process.next` back to back, each round's state
feeding the next, and `FusedRounds` runs blocks of rounds with it. The
rounds are exactly the process's own: the same `next`, the same secret
noise keys, one round's TF calls after another's on the worker.

Why: every `process.next(state, groups)` call on TFF's worker pays a fixed
cost that has nothing to do with the round's clients: the state is sent to
the worker and back, and the call goes through TFF's Python execution path
(~7 ms on W1; DP-FTRL's state holds three model copies). Keras amortizes
the same cost with `steps_per_execution`; here the state stays on the
worker between the k rounds of a block.

How it compiles: tracing k calls of `next` in a `tff.federated_computation`
works, but TFF's compiler then transforms (and runs Grappler over) k copies
of `next`: 2.8 s at k = 10, 8.3 s at k = 30, against 0.28 s for one `next`.
Instead, `next` is compiled ONCE (by the execution context's compiler, so
that a compiled form registered by the computation cache is the one used),
and the fused computation's compiled form is built directly from it:

  (arg: <state, rounds=<groups_1, ..., groups_k>>) -> let
      next = <the compiled form of next>,
      round_1 = next(<arg[0], arg[1][0]>),
      ...
      round_k = next(<round_{k-1}[0], arg[1][k-1]>)
    in <state=round_k[0], metrics=<round_1[1], ..., round_k[1]>>

a Lambda over a Block in which `next` is bound once and called k times
(TFF's worker resolves the references and closures); it is handed to the
context with `register_fn` so that the context never compiles the unrolled
computation. Its only TensorFlow is `next`'s: the noise keys are those of
the run's `next`, and each call executes its graphs afresh, so each round
draws its own nonce and noise (`tff_dp.mechanisms.noise_seeds`).

One TFF call has one CLIENTS cardinality, but the rounds of a block may
have different numbers of groups (Poisson cohorts): `FusedRounds` pads each
round's list of groups with padding groups (`grouped_data.padding_group`:
one slot with `valid` False, no example), which add exactly nothing to the
DP query's records, the adaptive clip's count or the training metrics' sums
(tests/algorithms/test_fused_rounds.py pins it), so a padded round is the
round itself and an all-empty round is `next(state, [])`.

The algorithms layer does not import the execution layer, so the caller
passes the context's compiler and registration (in the program:
`tff_dp.execution.compiled_forms.compile` and `.register`).

What cannot be fused: a process off the grouped path (TFF's one client per
call, `--clients_per_call=1`: its clients are datasets, and an empty one
would be a client; `FusedRounds` refuses it), and rounds split across
workers (`tff_dp.execution.split_rounds`, `--workers`): that context cuts a
computation at its ONE aggregation into a mergeable form and does not use
the registered compiled forms, while a block has k aggregations.
"""

import collections
from typing import Any, Callable, NamedTuple, Sequence

import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

from tff_dp.algorithms import grouped_data

# Names bound in the fused computation's outer scope; `next`'s compiled form
# is a closed lambda whose own names shadow these inside it.
_ARG, _NEXT, _ROUND = 'fused_rounds_arg', 'fused_rounds_next', 'fused_rounds_%d'
# What a padding group needs in a group (`grouped_data.make_groups`).
_GROUP_KEYS = frozenset({
    grouped_data.ORDER, grouped_data.LENGTH, grouped_data.VALID,
    grouped_data.CLIENT
})


class FusedOutput(NamedTuple):
  """What the fused computation returns."""
  state: Any  # The state after the block's last round.
  metrics: list  # Each round's metrics, in order.


def fused_type(next_type: tff.FunctionType, rounds: int) -> tff.FunctionType:
  """(state, [groups] * rounds) -> FusedOutput(state, [metrics] * rounds),
  with `next_type`'s Python containers (for the state to go back in)."""
  state_type, groups_type = next_type.parameter
  parameter = tff.StructWithPythonType(
      [('state', state_type),
       ('rounds', tff.StructWithPythonType([groups_type] * rounds, list))],
      collections.OrderedDict)
  result = tff.StructWithPythonType(
      [('state', next_type.result.state),
       ('metrics',
        tff.StructWithPythonType([next_type.result.metrics] * rounds, list))],
      FusedOutput)
  return tff.FunctionType(parameter, result)


def _fused_block(native_next: tff.framework.ComputationBuildingBlock,
                 parameter: tff.Type,
                 rounds: int) -> tff.framework.ComputationBuildingBlock:
  """The fused Lambda (module docstring) around `native_next`."""
  arg = tff.framework.Reference(_ARG, parameter)
  bound_next = tff.framework.Reference(_NEXT, native_next.type_signature)
  round_inputs = tff.framework.Selection(arg, index=1)
  state = tff.framework.Selection(arg, index=0)
  bindings, metrics = [(_NEXT, native_next)], []
  for i in range(rounds):
    call = tff.framework.Call(
        bound_next,
        tff.framework.Struct(
            [state, tff.framework.Selection(round_inputs, index=i)]))
    bindings.append((_ROUND % i, call))
    output = tff.framework.Reference(_ROUND % i, call.type_signature)
    state = tff.framework.Selection(output, index=0)
    metrics.append(tff.framework.Selection(output, index=1))
  result = tff.framework.Struct([('state', state),
                                 ('metrics', tff.framework.Struct(metrics))])
  return tff.framework.Lambda(_ARG, parameter,
                              tff.framework.Block(bindings, result))


def _concrete(block: tff.framework.ComputationBuildingBlock,
              annotated: tff.FunctionType) -> tff.Computation:
  return computation_impl.ConcreteComputation(
      computation_proto=block.proto,
      context_stack=context_stack_impl.context_stack,
      annotated_type=annotated)


def build_fused_next(
    process: tff.learning.templates.LearningProcess, rounds: int, *,
    compile_fn: Callable[[tff.Computation], tff.Computation],
    register_fn: Callable[[tff.Computation, tff.Computation], None]
) -> tff.Computation:
  """`rounds` rounds of `process.next` as one computation (module docstring).

  Args:
    process: A process of the grouped path (`tff_dp.algorithms.
      grouped_fedavg.build_grouped_dp_fedavg`): `next(state, groups)` with
      the groups placed at CLIENTS.
    rounds: How many rounds (k >= 1).
    compile_fn: The execution context's compiler (`compiled_forms.compile`):
      `process.next`'s compiled form, the registered one if any.
    register_fn: `compiled_forms.register`: hands the fused computation's
      compiled form to the context (and `next`'s, compiled here, so that a
      later single call of `next` does not compile it again).

  Returns:
    `fused(state, [groups_1, ..., groups_k]) -> FusedOutput(state, [metrics_1,
    ..., metrics_k])`, the state as `next` returns it; all k lists of groups
    must have the same length (see `FusedRounds`).

  Raises:
    ValueError: For `rounds` < 1.
    TypeError: For a `next` that is not (state, groups at CLIENTS) ->
      (state, metrics).
  """
  if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
    raise ValueError(f'rounds must be a positive int, got {rounds!r}')
  next_type = process.next.type_signature
  parameter, result = next_type.parameter, next_type.result
  if (not isinstance(parameter, tff.StructType) or len(parameter) != 2 or
      not isinstance(parameter[1], tff.FederatedType) or
      parameter[1].placement is not tff.CLIENTS or
      not isinstance(result, tff.StructType) or
      tff.structure.name_list(result) != ['state', 'metrics']):
    raise TypeError('fused rounds need next(state, groups at CLIENTS), got '
                    f'{next_type}')
  native_next = compile_fn(process.next)
  register_fn(process.next, native_next)
  annotated = fused_type(next_type, rounds)
  block = _fused_block(native_next.to_building_block(), annotated.parameter,
                       rounds)
  fused = _concrete(block, annotated)
  # Another object with the same proto: the registry holds the compiled
  # form strongly and `fused` weakly.
  register_fn(fused, _concrete(block, annotated))
  return fused


class FusedRounds:
  """Runs blocks of rounds of a grouped process, one TFF call per block.

  The fused computation of each block length is built on first use and kept
  (a run uses one or two lengths: its block, and a shorter last block).
  """

  def __init__(self, process: tff.learning.templates.LearningProcess, *,
               compile_fn: Callable[[tff.Computation], tff.Computation],
               register_fn: Callable[[tff.Computation, tff.Computation], None]):
    """Keeps the process; builds nothing yet.

    Args:
      process: A process of the grouped path (see `build_fused_next`).
      compile_fn: The execution context's compiler (`build_fused_next`).
      register_fn: Its registration of compiled forms (`build_fused_next`).
    """
    parameter = process.next.type_signature.parameter
    group_type = parameter[1].member if isinstance(
        parameter, tff.StructType) and len(parameter) == 2 and isinstance(
            parameter[1], tff.FederatedType) else None
    # Padding is sound only for groups: on TFF's one-client-per-call path an
    # empty dataset is a client (a zero update that clipping counts).
    if (not isinstance(group_type, tff.StructType) or
        not _GROUP_KEYS <= set(tff.structure.name_list(group_type))):
      raise TypeError('fused rounds need a process of the grouped path '
                      '(next(state, groups)), got next: '
                      f'{process.next.type_signature}')
    self._process = process
    self._compile_fn, self._register_fn = compile_fn, register_fn
    self._fused: dict[int, tff.Computation] = {}
    self._padding = grouped_data.padding_group(group_type)

  def fused(self, rounds: int) -> tff.Computation:
    """The fused computation of `rounds` rounds (built once per length)."""
    if rounds not in self._fused:
      self._fused[rounds] = build_fused_next(self._process,
                                             rounds,
                                             compile_fn=self._compile_fn,
                                             register_fn=self._register_fn)
    return self._fused[rounds]

  def pad(self, round_groups: Sequence[list]) -> list[list]:
    """Each round's groups, padded with padding groups to the block's most."""
    most = max((len(groups) for groups in round_groups), default=0)
    return [
        list(groups) + [self._padding] * (most - len(groups))
        for groups in round_groups
    ]

  def run(self, state, round_groups: Sequence[list]) -> tuple[Any, list]:
    """Runs one round per entry of `round_groups` from `state`.

    Args:
      state: The process state (as `initialize` or `next` returns it).
      round_groups: Each round's list of groups (`grouped_data.make_groups`
        or `GroupedRounds`), in round order; lists may differ in length.

    Returns:
      (the state after the last round, each round's metrics in order), as
      `len(round_groups)` calls of `process.next` would give them.

    Raises:
      ValueError: For an empty `round_groups`.
    """
    if not round_groups:
      raise ValueError('round_groups must hold at least one round')
    output = self.fused(len(round_groups))(state, self.pad(round_groups))
    return output.state, list(output.metrics)

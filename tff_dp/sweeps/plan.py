"""What a sweep runs: settings x seeds, one named run each, kept in plan.json.

A setting is the base configuration (a flagfile and flags, as one training run
would take them) with one value of each `--grid` flag and, with
`--target_epsilons`, one target epsilon, which the run calibrates its noise
multiplier to exactly as `--target_epsilon` does in a single run. Each setting
runs once per seed (`--seed` = the base seed + 0, 1, ...); the non-private
twin (the project's non-private settings, as `configs/nonprivate.cfg` makes
them from `configs/default.cfg`) runs once per seed too.

The plan is written to the sweep directory before the first run and compared
with the command's plan when the sweep is run again: a different plan in the
same directory is refused, naming the first differences, so that a resumed
sweep never mixes runs of two plans. Pure Python.
"""

import dataclasses
import hashlib
import itertools
import json
import math
import os
import re
from typing import Any, Mapping, Optional, Sequence, Union

from tff_dp import atomic_io

PLAN_FILE = 'plan.json'
FORMAT_VERSION = 1
NONPRIVATE_SETTING = 'nonprivate'
# The non-private twin: no central mechanism, FedAvg weighted by |D_k| / |D|
# (what configs/nonprivate.cfg changes in configs/default.cfg), no noise at
# the clients and no budget (both need a DP mechanism).
NONPRIVATE_OVERRIDES = {
    'dp_mechanism': 'none',
    'client_weighting': 'num_examples',
    'weight_cap': None,
    'local_dp': 'none',
    'example_dp': False,
    'target_epsilon': None,
    'max_epsilon': None,
}
# Flags a grid may not sweep: each has its own flag in the sweep program.
NOT_GRIDDABLE = {'seed': '--seeds', 'target_epsilon': '--target_epsilons'}
# Settings that locate or host a run rather than decide what it computes: a
# sweep directory moved elsewhere, or run unconfined, is the same plan.
NOT_COMPARED = frozenset({
    'output_dir', 'run_name', 'allow_unconfined_worker', 'workers',
    'worker_certs'
})
_RUN_NAME_CHARS = re.compile(r'[^A-Za-z0-9._-]')

Number = Union[int, float]


class PlanError(ValueError):
  """A sweep flag that cannot be planned; the message names flag and value."""

  def __init__(self, flag: str, value: Any, reason: str):
    super().__init__(f'--{flag}={value}: {reason}')


class PlanMismatchError(ValueError):
  """The sweep directory holds another plan; the message says how it differs."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep.

  Attributes:
    name: Its run directory's name (a valid `--run_name`).
    setting: The label of its setting, shared by its seeds.
    seed: Its `--seed`.
    overrides: Flag name -> value over the plan's base settings.
    nonprivate: Whether it is the non-private twin.
    target_epsilon: The epsilon it calibrates to, if any.
  """
  name: str
  setting: str
  seed: int
  overrides: Mapping[str, Any]
  nonprivate: bool = False
  target_epsilon: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Plan:
  """Every run of a sweep, over the base settings (flag name -> value)."""
  base: Mapping[str, Any]
  runs: tuple[Run, ...]

  def settings(self, run: Run, *, sweep_dir: str) -> dict[str, Any]:
    """The run's flag values, writing into `sweep_dir`/`run.name`."""
    return {
        **self.base,
        **run.overrides, 'output_dir': sweep_dir,
        'run_name': run.name
    }

  def releases_timing(self, run: Run) -> bool:
    """Whether the run's wall time may be kept and shown: a DP run's grows
    with its hidden cohorts, so only the non-private twin's, or a run's that
    asks for values outside the guarantee (--release_nonprivate_metrics), as
    the training program's own console decides for its ETA."""
    return run.nonprivate or bool({
        **self.base,
        **run.overrides
    }.get('release_nonprivate_metrics'))

  def setting_labels(self) -> list[str]:
    """The settings' labels, in plan order."""
    return list(dict.fromkeys(run.setting for run in self.runs))

  def to_json(self) -> dict[str, Any]:
    return {
        'format_version': FORMAT_VERSION,
        'base': dict(sorted(self.base.items())),
        'runs': [dataclasses.asdict(run) for run in self.runs],
    }

  @classmethod
  def from_json(cls, values: Mapping[str, Any]) -> 'Plan':
    runs = tuple(
        Run(**{
            **run, 'overrides': dict(run['overrides'])
        }) for run in values['runs'])
    return cls(base=dict(values['base']), runs=runs)

  def digest(self) -> str:
    """8 hex digits of the plan: the default sweep directory's suffix."""
    values = self.to_json()
    values['base'] = _compared(values['base'])
    text = json.dumps(values, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def format_value(value: Number) -> str:
  """A grid value as the labels show it: 0.5, 1, 1e-05, 20."""
  return str(value) if isinstance(value, int) else f'{value:g}'


def _parse_number(flag: str, text: str, item: str, kind: type) -> Number:
  """One value `item` of a list `text`; `PlanError` naming both if it is
  not a number of `kind`."""
  try:
    value = kind(item)
  except ValueError as e:
    expected = 'an integer' if kind is int else 'a number'
    raise PlanError(flag, text, f'{item!r} is not {expected}') from e
  if isinstance(value, float) and not math.isfinite(value):
    raise PlanError(flag, text, f'{item!r} is not a finite number')
  return value


def _parse_list(flag: str, text: str, kind: type) -> tuple[Number, ...]:
  items = [item.strip() for item in text.split(',')]
  if not text.strip() or not all(items):
    raise PlanError(flag, text,
                    'must be a comma-separated list of values, e.g. 0.5,1,2')
  values = tuple(_parse_number(flag, text, item, kind) for item in items)
  if len(set(values)) != len(values):
    raise PlanError(flag, text, 'repeats a value')
  return values


def parse_grid(
    text: str, numeric_flags: Mapping[str,
                                      type]) -> tuple[str, tuple[Number, ...]]:
  """`--grid=noise_multiplier=0.5,1,2` -> ('noise_multiplier', (0.5, 1.0, 2.0)).

  Args:
    text: The flag's value, NAME=V1,V2,...
    numeric_flags: The training flags a grid may sweep -> int or float.

  Raises:
    PlanError: naming --grid and the value.
  """
  name, sep, values = text.partition('=')
  name = name.strip().removeprefix('--')
  if not sep or not name:
    raise PlanError('grid', text, 'must be FLAG=V1,V2,... (e.g. '
                    'noise_multiplier=0.5,1,2)')
  if name in NOT_GRIDDABLE:
    raise PlanError('grid', text,
                    f'sweep --{name} with {NOT_GRIDDABLE[name]} instead')
  if name not in numeric_flags:
    raise PlanError(
        'grid', text,
        f'--{name} is not a numeric training flag (a grid sweeps numbers)')
  try:
    return name, _parse_list(name, values, numeric_flags[name])
  except PlanError as e:
    reason = str(e).split(': ', 1)[1]  # The value is the grid's, named.
    raise PlanError('grid', text, reason) from e


def parse_epsilons(text: str) -> tuple[float, ...]:
  """`--target_epsilons=1,2,4,8` -> (1.0, 2.0, 4.0, 8.0); each > 0."""
  values = _parse_list('target_epsilons', text, float)
  if any(value <= 0 for value in values):
    raise PlanError('target_epsilons', text, 'every epsilon must be > 0')
  return values


def run_name(setting: str, seed: int) -> str:
  """A valid --run_name for `setting`'s run with `seed`: eps4_seed1."""
  safe = _RUN_NAME_CHARS.sub('_', setting.replace('=', '-').replace(' ', '_'))
  return f'{safe}_seed{seed}'


def _setting_label(base_name: str, target: Optional[float],
                   grid_values: Sequence[tuple[str, Number]]) -> str:
  parts = [] if target is None else [f'eps{format_value(target)}']
  parts += [f'{name}={format_value(value)}' for name, value in grid_values]
  return ' '.join(parts) or base_name


def expand(base: Mapping[str, Any],
           *,
           base_name: str,
           grids: Sequence[tuple[str, Sequence[Number]]] = (),
           target_epsilons: Sequence[float] = (),
           seeds: int = 1,
           nonprivate_twin: bool = True) -> Plan:
  """Every setting (grid x target epsilons) x seed, and the twin per seed.

  Args:
    base: The base settings, flag name -> value (`TrainConfig.to_json()`).
    base_name: The label of the base setting when nothing is swept (the
      flagfile's name).
    grids: (flag, values) per `--grid`, in the order given.
    target_epsilons: Each a setting of its own (`--target_epsilon`).
    seeds: Runs per setting, with --seed = base seed + 0, 1, ...
    nonprivate_twin: Also run the non-private twin once per seed (never for
      a base that is not private: its runs are the twin).

  Raises:
    PlanError: For flags that contradict each other or a name clash.
  """
  if seeds < 1:
    raise PlanError('seeds', seeds, 'must be at least 1')
  names = [name for name, _ in grids]
  if len(set(names)) != len(names):
    raise PlanError('grid', ','.join(names), 'names a flag twice')
  if target_epsilons:
    if base.get('target_epsilon') is not None:
      raise PlanError('target_epsilon', base['target_epsilon'],
                      'give the targets as --target_epsilons only')
    if 'noise_multiplier' in names:
      raise PlanError(
          'grid', 'noise_multiplier=...', 'with --target_epsilons the '
          'noise multiplier is calibrated to each target, not swept')
  first_seed = int(base.get('seed') or 0)
  runs = []
  targets = list(target_epsilons) or [None]
  value_lists = [[(name, value) for value in values] for name, values in grids]
  for target in targets:
    for grid_values in itertools.product(*value_lists):
      label = _setting_label(base_name, target, grid_values)
      for i in range(seeds):
        seed = first_seed + i
        overrides = {**dict(grid_values), 'seed': seed}
        if target is not None:
          overrides['target_epsilon'] = target
        runs.append(
            Run(run_name(label, seed),
                label,
                seed,
                overrides,
                target_epsilon=target))
  if nonprivate_twin and _private(base):
    for i in range(seeds):
      seed = first_seed + i
      runs.append(
          Run(run_name(NONPRIVATE_SETTING, seed),
              NONPRIVATE_SETTING,
              seed, {
                  **NONPRIVATE_OVERRIDES, 'seed': seed
              },
              nonprivate=True))
  clashes = [
      n for n in {r.name for r in runs} if sum(r.name == n for r in runs) > 1
  ]
  if clashes:
    raise PlanError('grid', clashes[0], 'two settings give the same run name')
  return Plan(base=dict(base), runs=tuple(runs))


def _private(base: Mapping[str, Any]) -> bool:
  """Whether the base claims some DP (its twin then differs from it)."""
  return (base.get('dp_mechanism') != 'none' or
          base.get('local_dp', 'none') != 'none' or
          bool(base.get('example_dp')))


def argv(settings: Mapping[str, Any]) -> list[str]:
  """The training program's flags for `settings` (None: left at default).

  Every setting is given, so a flagfile's value that a run must not have
  (the twin's --target_epsilon, say) is simply not passed.
  """
  args = []
  for name, value in settings.items():
    if value is None:
      continue
    if isinstance(value, bool):
      args.append(f'--{name}' if value else f'--no{name}')
    elif isinstance(value, (list, tuple)):
      args.append(f'--{name}={",".join(str(v) for v in value)}')
    elif isinstance(value, float):
      args.append(f'--{name}={value!r}')  # Exact: calibration depends on it.
    else:
      args.append(f'--{name}={value}')
  return args


def _compared(base: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in base.items() if k not in NOT_COMPARED}


def differences(saved: Mapping[str, Any], plan: Plan) -> list[str]:
  """How `plan` differs from the `saved` plan.json, one phrase each."""
  found = []
  now = json.loads(json.dumps(plan.to_json()))  # Compared as JSON reads it.
  before_base = _compared(saved.get('base', {}))
  now_base = _compared(now['base'])
  for name in sorted(set(before_base) | set(now_base)):
    before, after = before_base.get(name), now_base.get(name)
    if before != after:
      found.append(f'--{name}: plan.json {before!r}, now {after!r}')
  saved_runs = {run['name']: run for run in saved.get('runs', [])}
  now_runs = {run['name']: run for run in now['runs']}
  if list(saved_runs) != list(now_runs):
    found.append(
        f'runs: plan.json {sorted(saved_runs)}, now {sorted(now_runs)}')
  else:
    found += [
        f'run {name}: plan.json {saved_runs[name]}, now {run}'
        for name, run in now_runs.items()
        if saved_runs[name] != run
    ]
  return found


def write_or_check(sweep_dir: str, plan: Plan, *, command: str) -> bool:
  """Writes plan.json, or checks that the one there is `plan`.

  Args:
    sweep_dir: The sweep directory (created if missing).
    plan: The command's plan.
    command: The command line, recorded for the refusal's message.

  Returns:
    Whether the directory already held this plan (the sweep resumes).

  Raises:
    PlanMismatchError: plan.json is another plan or not a plan.
    OSError: The directory cannot be created or written.
  """
  path = os.path.join(sweep_dir, PLAN_FILE)
  if os.path.exists(path):
    try:
      with open(path, encoding='utf-8') as f:
        saved = json.load(f)
      made_by = saved.get('command', '?')
    except (OSError, ValueError, AttributeError) as e:
      raise PlanMismatchError(
          f'{path} is not a plan tff-dp wrote ({e}); choose another '
          '--run_name') from e
    found = differences(saved, plan)
    if found:
      shown = '; '.join(found[:3]) + ('; ...' if len(found) > 3 else '')
      raise PlanMismatchError(
          f'{sweep_dir} holds another sweep ({shown}); it was made by '
          f'`{made_by}`: run that command to resume it, or choose another '
          '--run_name')
    return True
  os.makedirs(sweep_dir, exist_ok=True)
  atomic_io.write_text_atomic(
      path,
      json.dumps({
          **plan.to_json(), 'command': command
      }, indent=1) + '\n')
  return False


def read(sweep_dir: str) -> Optional[Plan]:
  """The plan of `sweep_dir`, or None if it holds none."""
  path = os.path.join(sweep_dir, PLAN_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding='utf-8') as f:
    return Plan.from_json(json.load(f))

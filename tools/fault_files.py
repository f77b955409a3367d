"""Fault cases of the campaign that tamper with files: run directories, data.

Each works on a copy of the campaign's reference run (a finished, verified
smoke run; `fault_cases.prepare`) and runs the real programs on it:

* corrupt newest checkpoint, its round released: bytes flipped or cut in
  state.npz, meta.json changed, MANIFEST.json removed or garbled. The same
  command (or one more round) must be refused: exit 2, one `tff-dp: error:`
  line naming the checkpoint, no traceback, every file unchanged.
* corrupt newest checkpoint, its round NOT released yet (a crash after the
  checkpoint, before its ledger and values: metrics.csv and ledger.json cut
  to the round before): the same command must fall back past it, say
  "moved an invalid checkpoint aside", leave it in checkpoints/corrupt-round_*
  and finish as an uninterrupted run would.
* foreign checkpoint: the run marker's run id changed or removed, the twin
  run's checkpoints (same flags, another run) copied in, or only its newest
  one. Refused with "belongs to another run", exit 2, before TensorFlow is
  imported, every file unchanged.
* edited ledger: ledger.json cut to fewer rounds, its noise multiplier
  raised, garbled or removed. `python -m tff_dp.cli.epsilon --run_dir=RUN` must
  warn about ledger.json (cut or raised: "disagrees with the verified
  checkpoint") and print the epsilon of the unedited run, itself checked
  against the epsilon the flags imply.
* crafted SQLite: a --client_data file whose client ids are SQL injections
  must give each client exactly its own rows (read back with parameterized
  SQL); files with bad metadata, rows, schema or bytes must be refused by
  the training program: exit 2, one line naming the file, no traceback, no
  run directory created.

With `quick`, one variant of each (the ones named in issue 14).
"""

import glob
import json
import os
import secrets
import shutil
import sys

from tff_dp.program import resume
from tools import fault_context
from tools import fault_runs
from tools import fault_sqlite

Context = fault_context.Context
Count = fault_context.Count

_REFUSED_TIMEOUT_SECONDS = 300.0


def _copy_reference(ctx: Context, case: str) -> tuple[str, str]:
  """(output_dir, run_dir) of a fresh copy of the reference run."""
  output_dir = os.path.join(ctx.output_dir, 'files', case)
  run_dir = os.path.join(output_dir, os.path.basename(ctx.reference))
  shutil.rmtree(output_dir, ignore_errors=True)
  shutil.copytree(ctx.reference, run_dir, symlinks=True)
  return output_dir, run_dir


def _newest(run_dir: str) -> str:
  return sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))[-1]


def _flip_bytes(path: str) -> None:
  with open(path, 'r+b') as f:
    data = f.read()
    f.seek(len(data) // 2)
    f.write(bytes(b ^ 0xff for b in data[len(data) // 2:][:4]))


def _cut_in_half(path: str) -> None:
  os.truncate(path, os.path.getsize(path) // 2)


def _garble(path: str) -> None:
  with open(path, 'w') as f:
    f.write('{')


# name -> edit of the newest checkpoint's directory.
_CORRUPTIONS = {
    'state.npz bytes flipped':
        lambda c: _flip_bytes(os.path.join(c, 'state.npz')),
    'state.npz cut in half':
        lambda c: _cut_in_half(os.path.join(c, 'state.npz')),
    'meta.json bytes flipped':
        lambda c: _flip_bytes(os.path.join(c, 'meta.json')),
    'MANIFEST.json removed':
        lambda c: os.remove(os.path.join(c, 'MANIFEST.json')),
    'MANIFEST.json garbled':
        lambda c: _garble(os.path.join(c, 'MANIFEST.json')),
}


def _changes(before: dict[str, bytes], after: dict[str, bytes]) -> list[str]:
  """Files added, removed or changed; worker.log may only grow."""
  changed = sorted(name for name in set(before) | set(after)
                   if before.get(name) != after.get(name) and
                   not (name == 'worker.log' and name in before and
                        name in after and after[name].startswith(before[name])))
  return [f'files of the run changed: {changed}'] if changed else []


def _refused(ctx: Context,
             run_dir: str,
             args: list[str],
             *,
             what: str,
             needle: str,
             env=None) -> tuple[list[str], float]:
  """Runs `args`; (problems unless refused in one line with every file
  kept, seconds the refusal took)."""
  before = fault_runs.files(run_dir)
  outcome = ctx.run(args, what=what, timeout=_REFUSED_TIMEOUT_SECONDS, env=env)
  problems = fault_context.exit_problems(outcome, code=2)
  problems += fault_context.one_line_problems(outcome,
                                              prefix='tff-dp: error: ',
                                              needle=needle)
  return problems + _changes(before, fault_runs.files(run_dir)), (
      outcome.seconds)


def _released_corruption(ctx: Context, number: int,
                         name: str) -> tuple[list[str], float]:
  """The newest checkpoint, its round released, corrupted as `name` says."""
  output_dir, run_dir = _copy_reference(ctx, f'corrupt-{number}')
  newest = _newest(run_dir)
  _CORRUPTIONS[name](newest)
  # The same command, or one that asks for one more round.
  rounds = ctx.rounds + number % 2
  return _refused(ctx,
                  run_dir,
                  fault_runs.train_args(output_dir, 'run', rounds),
                  what=f'resume past: {name}',
                  needle=os.path.basename(newest))


def _unreleased_corruption(ctx: Context) -> list[str]:
  """The newest checkpoint corrupt before its round was released."""
  output_dir, run_dir = _copy_reference(ctx, 'corrupt-unreleased')
  resume.truncate_rows(os.path.join(run_dir, 'metrics.csv'),
                       last_round=ctx.rounds - 1)
  ledger_path = os.path.join(run_dir, 'ledger.json')
  with open(ledger_path) as f:
    ledger = json.load(f)
  ledger['rounds'] = ledger['rounds'][:ctx.rounds - 1]
  with open(ledger_path, 'w') as f:
    json.dump(ledger, f)
  newest = _newest(run_dir)
  _flip_bytes(os.path.join(newest, 'state.npz'))
  outcome = ctx.run(fault_runs.train_args(output_dir, 'run', ctx.rounds),
                    what='fallback past an unreleased corrupt checkpoint')
  problems = fault_context.exit_problems(outcome, code=0)
  if 'moved an invalid checkpoint aside' not in outcome.stdout:
    problems.append('no "moved an invalid checkpoint aside" warning')
  if not glob.glob(os.path.join(run_dir, 'checkpoints', 'corrupt-round_*')):
    problems.append('no checkpoints/corrupt-round_*')
  if not problems:
    problems += ctx.verify(run_dir)
  return problems


def corruptions(ctx: Context) -> Count:
  """Corrupts the newest checkpoint, released and not yet released."""
  count = Count('corruptions detected')
  names = sorted(_CORRUPTIONS)
  if ctx.quick:
    names = ['state.npz bytes flipped']
  for number, name in enumerate(names, 1):
    problems, seconds = _released_corruption(ctx, number, name)
    ctx.log(f'corrupt newest checkpoint ({name}): '
            f'{"; ".join(problems) or "refused"} in {seconds:.1f} s')
    count.add(name, problems)
  problems = _unreleased_corruption(ctx)
  ctx.log('corrupt newest checkpoint, round not released: '
          f'{"; ".join(problems) or "moved aside, resumed, finished"}')
  count.add('corrupt unreleased checkpoint', problems)
  count.details.append(f'{count.total - 1} refused, 1 fallback')
  return count


# --- Foreign checkpoints. ----------------------------------------------------


def _write_marker(run_dir: str, run_id: str) -> None:
  with open(os.path.join(run_dir, resume.RUN_MARKER), 'w') as f:
    f.write(f'tff-dp run directory\nrun_id={run_id}\n')


def _twin_checkpoints(run_dir: str, twin: str) -> None:
  shutil.rmtree(os.path.join(run_dir, 'checkpoints'))
  shutil.copytree(os.path.join(twin, 'checkpoints'),
                  os.path.join(run_dir, 'checkpoints'))


def _twin_newest(run_dir: str, twin: str) -> None:
  newest = _newest(run_dir)
  shutil.rmtree(newest)
  shutil.copytree(os.path.join(twin, 'checkpoints', os.path.basename(newest)),
                  newest)


# name -> edit(run_dir, twin run_dir).
_FOREIGN = {
    'run id changed':
        lambda r, t: _write_marker(r, secrets.token_hex(16)),
    'run marker removed':
        lambda r, t: os.remove(os.path.join(r, resume.RUN_MARKER)),
    "the twin run's checkpoints":
        _twin_checkpoints,
    "the twin run's newest checkpoint":
        _twin_newest,
}


def foreign_checkpoints(ctx: Context) -> Count:
  """Checkpoints of another run with the same flags, refused early."""
  count = Count('foreign checkpoints refused')
  names = list(_FOREIGN)[:1] if ctx.quick else list(_FOREIGN)
  for number, name in enumerate(names, 1):
    output_dir, run_dir = _copy_reference(ctx, f'foreign-{number}')
    _FOREIGN[name](run_dir, ctx.twin)
    problems, seconds = _refused(ctx,
                                 run_dir,
                                 fault_runs.train_args(output_dir, 'run',
                                                       ctx.rounds + 1),
                                 what=f'foreign checkpoint: {name}',
                                 needle='belongs to another run',
                                 env=fault_runs.without_tensorflow(output_dir))
    ctx.log(f'foreign checkpoint ({name}): '
            f'{"; ".join(problems) or "refused before TensorFlow"} in '
            f'{seconds:.1f} s')
    count.add(name, problems)
  return count


# --- Edited ledgers. ---------------------------------------------------------


def _edit_ledger(path: str, edit) -> None:
  with open(path) as f:
    ledger = json.load(f)
  edit(ledger)
  with open(path, 'w') as f:
    json.dump(ledger, f)


def _raise_noise(value) -> None:
  """Multiplies every noise multiplier in a JSON value by 10."""
  if isinstance(value, dict):
    for key, item in value.items():
      if key == 'noise_multiplier' and isinstance(item, (int, float)):
        value[key] = item * 10
      else:
        _raise_noise(item)
  elif isinstance(value, list):
    for item in value:
      _raise_noise(item)


def _ledger_edits(ctx: Context) -> dict:
  """name -> (edit of ledger.json's path, what the warning must say)."""
  keep = ctx.rng.randrange(ctx.rounds)
  disagrees = 'disagrees with the verified checkpoint'
  return {
      f'cut to {keep} rounds': (lambda p: _edit_ledger(
          p, lambda d: d.update(rounds=d['rounds'][:keep])), disagrees),
      'noise multiplier x10':
          (lambda p: _edit_ledger(p, _raise_noise), disagrees),
      'garbled': (_garble, 'ledger.json'),
      'removed': (os.remove, 'ledger.json'),
  }


def _epsilon_report(ctx: Context, run_dir: str,
                    what: str) -> tuple[list[str], list[str], list[str]]:
  """(problems, warning lines, epsilon and guarantee lines) of a run dir."""
  outcome = ctx.run(
      [sys.executable, '-m', 'tff_dp.cli.epsilon', f'--run_dir={run_dir}'],
      what=what,
      timeout=_REFUSED_TIMEOUT_SECONDS)
  problems = fault_context.exit_problems(outcome, code=0)
  lines = outcome.stdout.splitlines() + outcome.stderr.splitlines()
  warnings = [line for line in lines if line.startswith('warning: ')]
  epsilons = [
      line for line in lines if line.startswith(('epsilon (', 'guarantee: '))
  ]
  if not any('(checksums verified)' in line for line in lines):
    problems.append('not reported from a verified checkpoint')
  return problems, warnings, epsilons


def edited_ledgers(ctx: Context) -> Count:
  """ledger.json edited: epsilon --run_dir reports the checkpoint's."""
  count = Count('edited ledgers caught')
  problems, warnings, truth = _epsilon_report(ctx, ctx.reference,
                                              'epsilon of the reference')
  for kind, epsilon in ctx.epsilons.items():
    if f'epsilon ({kind}): {epsilon:.6g}' not in truth:
      problems.append(f'the reference run reports {truth}, not {kind} '
                      f'{epsilon:.6g}')
  if problems or warnings:
    count.add('the unedited reference', problems + warnings)
    return count
  edits = _ledger_edits(ctx)
  names = list(edits)[:1] if ctx.quick else list(edits)
  for number, name in enumerate(names, 1):
    _, run_dir = _copy_reference(ctx, f'ledger-{number}')
    edit, says = edits[name]
    edit(os.path.join(run_dir, 'ledger.json'))
    problems, warnings, reported = _epsilon_report(
        ctx, run_dir, f'epsilon of a ledger {name}')
    if not any(says in line for line in warnings):
      problems.append(f'no warning saying {says!r}: {warnings}')
    if reported != truth:
      problems.append(f'reported {reported}, the unedited run {truth}')
    ctx.log(f'edited ledger ({name}): '
            f'{"; ".join(problems) or "caught, checkpoint epsilon reported"}')
    count.add(name, problems)
  return count


# --- Crafted SQLite. ---------------------------------------------------------


def hostile_client_ids(ctx: Context) -> Count:
  """Client ids that are SQL: each client reads exactly its own rows."""
  count = Count('hostile client ids read only their own rows')
  directory = os.path.join(ctx.output_dir, 'sqlite', 'hostile')
  os.makedirs(directory, exist_ok=True)
  ids = fault_sqlite.HOSTILE_IDS[:1] if ctx.quick else fault_sqlite.HOSTILE_IDS
  for client_id, problems in fault_sqlite.check_hostile_ids(directory, ids):
    ctx.log(f'hostile client id {client_id!r}: '
            f'{"; ".join(problems) or "read exactly its own rows"}')
    count.add(repr(client_id), problems)
  return count


def bad_inputs(ctx: Context) -> Count:
  """Crafted --client_data files, refused by the training program."""
  count = Count('bad inputs refused')
  names = (fault_sqlite.QUICK_BAD_FILES
           if ctx.quick else sorted(fault_sqlite.BAD_FILES))
  for number, name in enumerate(names, 1):
    directory = os.path.join(ctx.output_dir, 'sqlite', f'bad-{number}')
    path = fault_sqlite.make_bad_file(directory, name)
    output_dir = os.path.join(directory, 'runs')
    args = fault_runs.train_args(output_dir, 'run', ctx.rounds) + [
        '--dataset=sqlite', f'--client_data={path}'
    ]
    outcome = ctx.run(args,
                      what=f'--client_data with {name}',
                      timeout=_REFUSED_TIMEOUT_SECONDS)
    problems = fault_context.exit_problems(outcome, code=2)
    problems += fault_context.one_line_problems(
        outcome,
        prefix=f'tff-dp: error: --dataset=sqlite: {path}',
        needle=fault_sqlite.BAD_FILES[name])
    if os.path.isdir(output_dir) and os.listdir(output_dir):
      problems.append(f'{output_dir} was created: {os.listdir(output_dir)}')
    ctx.log(f'bad --client_data ({name}): {"; ".join(problems) or "refused"}'
            f'\n  it said: {fault_runs.last_line(outcome.stderr)[:300]}')
    count.add(name, problems)
  return count

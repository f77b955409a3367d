"""The audit program's output: its table, files, and the training audit.

`tff_dp.cli.audit` reads the flags; this module prints what the audits
measured and writes it to the audit's directory (see that module's
docstring for the files). The training audit's flow
(`tff_dp.program.training_audit`) is driven from here with a progress line
per run and every few rounds.
"""

import json
import math
import os

from tff_dp import atomic_io
from tff_dp.program import run_summary

audit_json = run_summary.audit_json


def show(value: float) -> str:
  """A number for the table (n/a for inf and NaN)."""
  return f'{value:.3g}' if math.isfinite(value) else 'n/a'


def row(name: str, result, accuracy=None) -> str:
  """One line of the table."""
  analytic = ', '.join(
      f'{v:.3g} ({k})' for k, v in result.analytic.items() if not math.isnan(v))
  return (f'{name:<15} {analytic or "inf":<24} '
          f'{show(result.estimate_all_iterates.epsilon):>10} '
          f'{show(result.estimate_final.epsilon):>10} '
          f'{show(result.bound.epsilon):>12} '
          f'{"" if accuracy is None else show(accuracy):>9}')


def write_outputs(run_dir: str, results: dict, report: dict, *,
                  title: str) -> None:
  """Writes audit.json, the TensorBoard values and the plots.

  The first audit goes to tensorboard/ and the run directory's PNGs, each
  other to tensorboard/<name>/ (and its PNGs to <name>/ unless a noise-off
  twin).
  """
  from tff_dp.program import audit_plots  # pylint: disable=g-import-not-at-top
  from tff_dp.program import mechanism_audit  # pylint: disable=g-import-not-at-top
  for i, (name, result) in enumerate(results.items()):
    sub = '' if i == 0 else name
    mechanism_audit.write_tensorboard(result,
                                      os.path.join(run_dir, 'tensorboard', sub))
    if not name.endswith('noise_off'):
      os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
      audit_plots.write_audit_plots(result,
                                    os.path.join(run_dir, sub),
                                    title=f'{title} ({name})')
  atomic_io.write_text_atomic(os.path.join(run_dir, 'audit.json'),
                              json.dumps(report, indent=2))


def print_table(config, rows, *, beta: float) -> None:
  """Prints the audit's table: (name, result, accuracy or None) per row."""
  lines = [
      f'{"":<15} {"analytic epsilon":<24} {"estimate":>10} {"(final)":>10} '
      f'{"lower bound":>12} {"accuracy":>9}',
      *(row(name.replace('_', ' '), result, accuracy)
        for name, result, accuracy in rows),
      f'delta {config.delta:g}; lower bound at confidence {1 - beta:g} '
      '(Steinke et al. 2023); estimates: one-shot (Andrew et al. 2024), not '
      'guarantees.',
  ]
  if any(name.startswith('local') for name, _, _ in rows):
    lines.append('local: the server sees each client\'s noised update; '
                 'analytic: the local epsilon of one participation.')
  print('\n'.join(lines), flush=True)


def audit_mechanisms(config, *, population: int, dim: int, canaries: int,
                     beta: float) -> dict:
  """Each mechanism of `config` and its noise-off twin, on canaries only.

  Returns:
    'audited', 'noise_off': the central mechanism (behind the clients'
    noise, if any); 'local', 'local_noise_off': the clients' own mechanism,
    as the server sees one update.
  """
  import dataclasses  # pylint: disable=g-import-not-at-top

  from tff_dp.program import local_audit  # pylint: disable=g-import-not-at-top
  from tff_dp.program import mechanism_audit  # pylint: disable=g-import-not-at-top
  results = {}
  if config.uses_dp_aggregator:
    for name, noise_off in (('audited', False), ('noise_off', True)):
      # With client+server noise, canaries pass the clients' noise first.
      behind = local_audit.behind_local_noise(config, noise_off=noise_off)
      results[name] = mechanism_audit.audit_mechanism(
          dataclasses.replace(config, noise_multiplier=0.0)
          if noise_off else config,
          population=population,
          dim=dim,
          canaries=canaries,
          beta=beta,
          **({} if behind is None else dict(build_aggregator=behind)))
  if config.local_dp is not config.local_dp.NONE:
    for name, noise_off in (('local', False), ('local_noise_off', True)):
      results[name] = local_audit.audit_local_mechanism(config,
                                                        dim=dim,
                                                        canaries=canaries,
                                                        beta=beta,
                                                        noise_off=noise_off)
  return results


def _progress(name: str, rounds: int):
  """A run's on_round callback: one line every tenth of the run."""
  every = max(1, rounds // 10)

  def on_round(round_num: int, values: dict) -> None:
    if round_num % every and round_num != rounds:
      return
    shown = [f'{name}: round {round_num}/{rounds}']
    for key, label in (('eval/accuracy', 'accuracy'),
                       ('audit/epsilon_estimate_all_iterates', 'estimate'),
                       ('audit/epsilon_lower_bound', 'lower bound')):
      if key in values:
        shown.append(f'{label} {show(values[key])}')
    print(', '.join(shown), flush=True)

  return on_round


def _membership_lines(audit) -> list[str]:
  result = audit.membership
  if result is None:
    return ['membership inference: no held-out clients']
  return [
      f'NON-PRIVATE (client data without noise): loss-threshold membership '
      f'inference on the production model, {result.members} training vs '
      f'{result.non_members} held-out clients: AUC {result.auc:.3f}, '
      f'advantage {result.advantage:.3f}, epsilon lower bound '
      f'{result.epsilon_lower_bound:.3g} at {1 - result.beta:.0%} confidence'
  ]


def audit_training(config, run_dir: str, *, canaries: int, beta: float):
  """--audit_kind=training: trains the three runs, prints, writes."""
  import dataclasses  # pylint: disable=g-import-not-at-top

  from tff_dp.program import experiment  # pylint: disable=g-import-not-at-top
  from tff_dp.program import prepare  # pylint: disable=g-import-not-at-top
  from tff_dp.program import training_audit  # pylint: disable=g-import-not-at-top

  def start(name, run_config):
    print(
        f'{name}: training {run_config.rounds} rounds with '
        f'{run_config.audit_canaries} canaries, noise multiplier '
        f'{run_config.noise_multiplier:g}',
        flush=True)

  audit = training_audit.audit_training(
      config,
      prepare.load_data(config),
      run_dir,
      canaries=canaries,
      beta=beta,
      run=lambda prepared, directory: experiment.run_experiment(
          prepared,
          directory,
          on_round=_progress(os.path.basename(directory), config.rounds)),
      on_start=start)
  accuracy = {
      name: summary.headline_value for name, summary in audit.summaries.items()
  }
  print_table(config, [('audited', audit.audited, accuracy['canaries']),
                       ('noise_off', audit.power, accuracy['noise_off'])],
              beta=beta)
  print(
      f'production (no canaries): accuracy '
      f'{show(accuracy["production"] or math.nan)}, epsilon '
      f'{show(audit.summaries["production"].guarantee_epsilon or math.inf)}',
      flush=True)
  print('\n'.join(_membership_lines(audit)), flush=True)
  write_outputs(
      run_dir,
      {
          'audited': audit.audited,
          'noise_off': audit.power
      },
      {
          'kind': 'training',
          'config': config.to_json(),
          # Without wall times: the audited run is a DP run on the real
          # clients, whose time grows with its hidden cohorts.
          'audited': audit_json(audit.audited, seconds=False),
          'noise_off': audit_json(audit.power, seconds=False),
          'accuracy': accuracy,
          'membership_inference': 'nonprivate/membership.json',
      },
      title=f'{config.dp_mechanism.value}, {config.rounds} rounds')
  if audit.membership is not None:
    os.makedirs(os.path.join(run_dir, 'nonprivate'), exist_ok=True)
    atomic_io.write_text_atomic(
        os.path.join(run_dir, 'nonprivate', 'membership.json'),
        json.dumps(dataclasses.asdict(audit.membership), indent=2))
  return {'audited': audit.audited, 'noise_off': audit.power}

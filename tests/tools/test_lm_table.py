"""tools.lm_table: the commands of the grid, and the table read from run files.

Pure Python: the run directories are written here in the formats the training
program writes (summary.json, config.json, metrics.csv) plus the driver's
lm_table.json; nothing is trained.
"""

import json

from tools import lm_table


def _write_run(out_dir, name, *, accuracy, seconds, peak_mb, epsilon, z,
               trained):
  run_dir = out_dir / 'runs' / name
  run_dir.mkdir(parents=True)
  (run_dir / 'summary.json').write_text(
      json.dumps({
          'accuracy': accuracy,
          'guarantee_epsilon': epsilon,
          'model': {
              'trainable_parameters': trained,
              'upload_bytes_per_client_round': 4 * trained
          }
      }))
  (run_dir / 'config.json').write_text(json.dumps({'noise_multiplier': z}))
  (run_dir / 'lm_table.json').write_text(
      json.dumps({
          'peak_tree_rss_mb': peak_mb,
          'load_average_1min': [3.5, 9.25]
      }))
  rows = ['round,eval/accuracy,nonprivate/round_seconds'] + [
      f'{i + 1},{accuracy - 0.01 * (i + 1)},{s}' for i, s in enumerate(seconds)
  ]
  (run_dir / 'metrics.csv').write_text('\n'.join(rows) + '\n')


def test_the_table_is_read_from_the_runs_and_marks_the_rest(tmp_path):
  _write_run(tmp_path,
             'lora4-eps4-seed0',
             accuracy=0.38351,
             seconds=[30.0, 8.0, 7.0, 9.0],
             peak_mb=2048,
             epsilon=3.99999,
             z=0.5923,
             trained=56464)
  _write_run(tmp_path,
             'lora4-eps4-seed1',
             accuracy=0.3812,
             seconds=[20.0, 6.0, 5.0],
             peak_mb=3072,
             epsilon=4.0,
             z=0.5923,
             trained=56464)
  text = lm_table.table(str(tmp_path), ['all', 'lora4'], ['none', '4'])
  lines = text.splitlines()
  assert lines[0] == ('| `--trainable` | trained parameters (= noise '
                      'dimension) | upload bytes per client and round | '
                      'non-private | epsilon 4 |')
  assert lines[2] == ('| `all` | not measured | not measured | not measured '
                      '| not measured |')
  # Medians 8.5 and 6.0 s; both seeds' accuracies and memories.
  assert lines[3] == ('| `lora`, rank 4 (alpha 4) | 56,464 | 225,856 | not '
                      'measured | 0.3835 / 0.3812; 8.5 / 6.0 s; 2.0 / 3.0 GiB '
                      '|')
  assert 'Load average (1 min) during the runs: 3.5 to 9.2.' in text
  assert ('Test accuracy after round 1 (one round from the pretrained model): '
          '0.3712 to 0.3735.') in text
  assert ('epsilon 4: z = 0.5923; epsilon reached (the smaller of PLD and '
          'RDP) 4.000 to 4.000.') in text


def test_each_cell_runs_its_own_settings():
  lora = lm_table.train_command('lora16', '2', 1, 'ckpt', 'out')
  assert {
      '--trainable=lora', '--lora_rank=16', '--lora_alpha=16',
      '--target_epsilon=2', '--release_nonprivate_metrics', '--seed=1',
      '--init_from=ckpt', '--run_name=lora16-eps2-seed1'
  } <= set(lora)
  plain = lm_table.train_command('head', 'none', 0, 'ckpt', 'out')
  assert '--dp_mechanism=none' in plain and '--trainable=head' in plain
  assert not any(a.startswith('--target_epsilon') for a in plain)
  # The shared setup, as the README's table states it.
  for flag in ('--rounds=20', '--clients_per_round=10', '--clients_per_call=1',
               '--client_learning_rate=0.1', '--transformer_layers=4',
               '--transformer_width=192'):
    assert flag in lora and flag in plain


def test_a_cut_last_line_of_metrics_csv_is_not_a_round(tmp_path):
  """A run killed mid-append leaves half a row without its line end
  (`tff_dp.program.metrics_file`): neither its seconds nor its accuracy
  count."""
  _write_run(tmp_path,
             'head-eps4-seed0',
             accuracy=0.5,
             seconds=[9.0, 7.0],
             peak_mb=1024,
             epsilon=4.0,
             z=0.6,
             trained=100)
  metrics = tmp_path / 'runs' / 'head-eps4-seed0' / 'metrics.csv'
  # The header and round 1's row, cut inside its seconds (3 of 30.0).
  metrics.write_text('round,eval/accuracy,nonprivate/round_seconds\n'
                     '1,0.49,3')
  cell = lm_table.read_cell(str(tmp_path), 'head', '4', 0)
  assert cell['seconds'] is None and cell['first_accuracy'] is None
  # Two whole rows and a third cut inside its seconds (3 of 30.0).
  metrics.write_text('round,eval/accuracy,nonprivate/round_seconds\n'
                     '1,0.49,9.0\n2,0.48,7.0\n3,0.47,3')
  cell = lm_table.read_cell(str(tmp_path), 'head', '4', 0)
  assert cell['seconds'] == 8.0 and cell['first_accuracy'] == 0.49

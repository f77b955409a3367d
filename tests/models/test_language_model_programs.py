"""The language-model task through the programs: pretrain on the public
modules of `--dataset=python_stdlib`, then train the transformer from it.

Tiny sizes; the full round trip (pretraining, a DP run from the checkpoint,
a LoRA run from it killed after round 1 and resumed, a refused mismatch)
takes a few minutes, hence `slow`. The offline task is held in memory
(`tff_dp.data.token_memory`), so `train` runs it on the grouped path, with
LoRA too.
"""

import json
import os

import pytest

from tests.helpers import programs

pytestmark = pytest.mark.e2e

_TINY = ('--dataset=python_stdlib', '--model=transformer',
         '--transformer_layers=1', '--transformer_width=16',
         '--transformer_heads=2', '--transformer_ff_width=32')


def test_pretraining_refuses_data_not_declared_public(tmp_path):
  result = programs.run_train('--dataset=digits',
                              '--model=mlp',
                              f'--output={tmp_path}/ckpt',
                              program=programs.PRETRAIN)
  assert result.returncode == 2, result.stderr
  assert 'declares no public clients' in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not os.path.exists(tmp_path / 'ckpt')


@pytest.mark.slow
def test_pretrain_then_private_training_from_the_checkpoint(tmp_path):
  checkpoint = str(tmp_path / 'ckpt')
  programs.run_train(*_TINY,
                     '--steps=3',
                     '--batch_size=8',
                     f'--output={checkpoint}',
                     program=programs.PRETRAIN,
                     check=True)
  with open(os.path.join(checkpoint, 'pretrained.json'), encoding='utf-8') as f:
    public = json.load(f)['public_clients']
  assert public

  common = ('--rounds=2', '--clients_per_round=4', '--client_batch_size=16',
            '--dp_mechanism=gaussian_fixed', '--noise_multiplier=0.5',
            '--clip=0.1', f'--output_dir={tmp_path}/runs',
            f'--init_from={checkpoint}')
  programs.run_train(*_TINY, *common, '--run_name=dp', check=True)
  run_dir = tmp_path / 'runs' / 'dp'
  statement = (run_dir / 'privacy_statement.txt').read_text()
  assert (f'pretrained centrally, WITHOUT noise, on data treated as public: '
          f'{len(public)} clients of --dataset=python_stdlib') in statement
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert summary['rounds'] == 2
  assert 0 <= summary['accuracy'] <= 1

  # LoRA one client per call: the frozen base comes from the checkpoint
  # and is sent once. A process whose constants were not the checkpoint's
  # would refuse its weights (`grouped_frozen.checked_weights`) at the
  # start and again when a resumed run rebuilds it, so both runs ending
  # well is the check that the constants are rebuilt the same.
  lora = ('--trainable=lora', '--lora_rank=2', '--lora_alpha=2',
          '--clients_per_call=1', '--run_name=lora')
  crashed = programs.run_train(
      *_TINY, *common, *lora, env_extra={'TFF_DP_CRASH_AT': 'between_rounds:1'})
  assert crashed.returncode == -9, crashed.stderr
  resumed = programs.run_train(*_TINY, *common, *lora, check=True)
  assert 'resuming after round 1' in resumed.stdout
  model = json.loads(
      (tmp_path / 'runs' / 'lora' / 'summary.json').read_text())['model']
  assert model['frozen_sent'] == 'once'
  assert model['download_bytes_per_client_round'] == model[
      'upload_bytes_per_client_round']

  refused = programs.run_train(*_TINY, *common, '--transformer_width=32',
                               '--run_name=other')
  assert refused.returncode == 2, refused.stderr
  assert 'transformer_width=16, this run has transformer_width=32' in (
      refused.stderr)
  assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr


@pytest.mark.slow
def test_lora_from_the_checkpoint_runs_on_the_grouped_path(tmp_path):
  """`--trainable=lora --init_from` through the program: the grouped path
  (the offline task in memory), the frozen tensors sent once, and a DP
  run's banner without statistics of the clients' windows."""
  checkpoint = str(tmp_path / 'ckpt')
  programs.run_train(*_TINY,
                     '--steps=2',
                     '--batch_size=8',
                     f'--output={checkpoint}',
                     program=programs.PRETRAIN,
                     check=True)
  result = programs.run_train(*_TINY,
                              '--rounds=2',
                              '--clients_per_round=10',
                              '--client_batch_size=16',
                              '--dp_mechanism=gaussian_adaptive',
                              '--noise_multiplier=0.5',
                              '--trainable=lora',
                              '--lora_rank=2',
                              '--lora_alpha=2',
                              f'--init_from={checkpoint}',
                              f'--output_dir={tmp_path}/runs',
                              '--run_name=lora',
                              check=True)
  assert 'simulation: up to 64 clients per TFF call (the grouped path' in (
      result.stdout), result.stdout[-3000:]
  assert 'once, with the client computation' in result.stdout
  # Public facts only: N and the shapes, never the windows' count.
  assert 'train windows' not in result.stdout
  assert 'train examples' not in result.stdout
  run_dir = tmp_path / 'runs' / 'lora'
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert summary['rounds'] == 2 and summary['private']
  assert summary['model']['frozen_sent'] == 'once'
  assert 0 <= summary['accuracy'] <= 1
  statement = (run_dir / 'privacy_statement.txt').read_text()
  assert 'pretrained centrally, WITHOUT noise' in statement

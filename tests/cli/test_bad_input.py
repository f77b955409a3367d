"""Bad input through the real program: one line naming the thing, exit 2.

Every case fails before TensorFlow is imported (about a second each), prints
no traceback, and leaves no run directory behind. The flag-level table in
test_cli_flags.py covers each flag's range; this table covers what only the
program sees: flagfiles, directories, and settings that need the data.
"""

import os

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import programs

pytestmark = pytest.mark.e2e

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_TAGS = os.path.join(REPO_ROOT, 'configs', 'stackoverflow_tag.cfg')


def _write(path, text):
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _cases(tmp):
  missing = os.path.join(tmp, 'missing.cfg')
  nested = _write(os.path.join(tmp, 'nested.cfg'), f'--flagfile={missing}\n')
  unknown = _write(os.path.join(tmp, 'unknown.cfg'), '--noise_mutliplier=1\n')
  bad_value = _write(os.path.join(tmp, 'bad_value.cfg'), '--rounds=ten\n')
  a_file = _write(os.path.join(tmp, 'a_file'), 'not a directory\n')
  return [
      ([f'--flagfile={missing}'], missing),
      ([f'--flagfile={nested}'], missing),
      ([f'--flagfile={unknown}'], 'noise_mutliplier'),
      ([f'--flagfile={bad_value}'], '--rounds=ten'),
      (['--flagfile=' + _SMOKE,
        f'--output_dir={a_file}/runs'], f'--output_dir={a_file}/runs'),
      (['--flagfile=' + _SMOKE,
        '--output_dir=/proc/tff-dp-runs'], '--output_dir=/proc/tff-dp-runs'),
      (['--flagfile=' + _SMOKE, 'positional'], "['positional']"),
      (['--flagfile=' + _SMOKE, '--delta=0.05'], '--delta=0.05'),
      (['--flagfile=' + _SMOKE, '--num_clients=5000'], 'num_clients=5000'),
      (['--flagfile=' + _SMOKE, '--dataset=synthetic'], '--dataset=synthetic'),
      # The CNN reshapes its input to images; breast cancer has none.
      (['--flagfile=' + _SMOKE, '--dataset=breast_cancer',
        '--model=cnn'], '--model=cnn'),
      # Token ids fit only the rnn, and the rnn only token ids.
      (['--flagfile=' + _SMOKE, '--model=rnn'], '--model=rnn'),
      (['--flagfile=' + _SMOKE,
        '--dataset=shakespeare'], '--model=logistic_regression'),
      ([
          '--flagfile=' + _SMOKE, '--dataset=breast_cancer',
          '--partition=natural'
      ], '--dataset=breast_cancer'),
      (['--flagfile=' + _SMOKE, '--client_sampling=shuffled_epochs'],
       '--client_sampling=shuffled_epochs'),
      (['--flagfile=' + _SMOKE,
        '--algorithm=dp_ftrl'], '--dp_mechanism=gaussian_adaptive'),
      # A missing partner flag is named with what it is, never '=None'.
      (['--flagfile=' + _SMOKE, '--local_dp=laplace'],
       '--local_dp=laplace: needs --local_epsilon (a positive number'),
      # The grouped path's DP-SGD samples each record once per round.
      ([
          '--flagfile=' + _SMOKE, '--clients_per_call=8', '--example_dp',
          '--dp_mechanism=none', '--client_epochs=2'
      ], '--clients_per_call=8'),
      (['--flagfile=' + _SMOKE, '--example_dp',
        '--algorithm=fedsgd'], '--example_dp'),
      # Each record would be in the client's data client_epochs times while
      # the record-level accountant charges it once.
      (['--flagfile=' + _SMOKE, '--example_dp',
        '--client_epochs=3'], '--client_epochs=3'),
      # Multi-label bags of words: no token ids for the rnn, and the grouped
      # path is single-label.
      (['--flagfile=' + _TAGS, '--model=rnn'], '--model=rnn'),
      (['--flagfile=' + _TAGS, '--clients_per_call=8'], '--clients_per_call=8'),
      # Rounds share a TFF call only on the grouped path.
      (['--flagfile=' + _SMOKE, '--clients_per_call=1',
        '--rounds_per_call=5'], '--rounds_per_call=5'),
      # 10 clients of ~144 records: delta = 0.01 < 1/population but not
      # below 1/n_k, which record-level DP-SGD needs.
      ([
          '--flagfile=' + _SMOKE, '--example_dp', '--dp_mechanism=none',
          '--num_clients=10', '--delta=0.01'
      ], '--delta=0.01'),
      (['--flagfile=' + _SMOKE,
        '--target_epsilon=1e-9'], '--target_epsilon=1e-09'),
      (['--flagfile=' + _SMOKE, '--max_epsilon=2',
        '--dp_mechanism=none'], '--max_epsilon=2.0'),
      # Below the first round's epsilon: it trained 0 rounds and exited 0.
      (['--flagfile=' + _SMOKE,
        '--max_epsilon=0.01'], '--max_epsilon=0.01: the first round alone '
       'costs epsilon '),
      # A file, or no directory, where the dataset's files are read from.
      ([
          '--flagfile=' + _SMOKE, '--dataset=emnist_digits',
          f'--data_dir={a_file}'
      ], f'--data_dir={a_file}: is not a directory; '),
      ([
          '--flagfile=' + _SMOKE, '--dataset=cifar100',
          f'--data_dir={tmp}/no-such-dir'
      ], f'--data_dir={tmp}/no-such-dir: no such directory; '),
  ]


def test_bad_input_table(tmp_path):
  cases = _cases(str(tmp_path))
  assert len(cases) >= 15
  output_dir = os.path.join(tmp_path, 'runs')
  failures = []
  for args, expected in cases:
    if not any(a.startswith('--output_dir=') for a in args):
      args = args + [f'--output_dir={output_dir}']
    result = programs.run_train(*args, timeout=120)
    problems = []
    if result.returncode != 2:
      problems.append(f'exit {result.returncode}')
    if expected not in result.stderr:
      problems.append(f'message lacks {expected!r}')
    if 'Traceback' in result.stderr:
      problems.append('traceback')
    if 'ERROR::' in result.stderr:
      problems.append("absl's 'ERROR::' prefix")
    if '=None' in result.stderr:
      problems.append("absl's '--flag=None' words for a missing flag")
    if os.path.isdir(output_dir) and os.listdir(output_dir):
      problems.append(f'wrote {os.listdir(output_dir)}')
    if problems:
      failures.append((args, problems, result.stderr.strip()[-300:]))
  assert not failures, failures

"""A checkpoint resumes only the run it belongs to, and never wedges it.

Each refusal is checked before TensorFlow is imported (a stand-in
`tensorflow` package that fails on import proves it) and leaves the run's
files as they were. One finished 2-round run of the smoke config is copied
and altered per test.
"""

import glob
import hashlib
import json
import os
import shutil

import pytest

from tests.helpers import REPO_ROOT
from tests.helpers import json_edits
from tests.helpers import programs
from tff_dp.program import resume

pytestmark = pytest.mark.e2e

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')


def _train(output_dir, *extra, env_extra=None):
  return programs.run_train(f'--flagfile={_SMOKE}',
                            '--rounds=2',
                            f'--output_dir={output_dir}',
                            '--run_name=run',
                            *extra,
                            env_extra=env_extra)


def _without_tensorflow(tmp_path):
  """An environment in which importing TensorFlow fails loudly."""
  fake = tmp_path / 'no_tf' / 'tensorflow'
  fake.mkdir(parents=True)
  (fake / '__init__.py').write_text(
      'raise ImportError("TensorFlow imported before the resume check")\n')
  return {'PYTHONPATH': str(fake.parent)}


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('finished')
  result = _train(output_dir)
  assert result.returncode == 0, result.stderr
  return os.path.join(output_dir, 'run')


def _copy(finished_run, tmp_path):
  run_dir = os.path.join(tmp_path, 'run')
  shutil.copytree(finished_run, run_dir)
  return run_dir


def _rewrite_meta(checkpoint_dir, edit):
  """Edits a checkpoint's meta.json and recomputes its manifest, as an
  adversary (or a careless user) with a text editor would."""
  json_edits.rewrite(os.path.join(checkpoint_dir, 'meta.json'), edit)
  json_edits.match_manifest(checkpoint_dir, 'meta.json')


def _newest(run_dir):
  return sorted(glob.glob(os.path.join(run_dir, 'checkpoints', 'round_*')))[-1]


def _files(run_dir):
  return {
      p: open(p, 'rb').read() for p in glob.glob(  # pylint: disable=consider-using-with
          os.path.join(run_dir, '**'),
          recursive=True) if os.path.isfile(p)
  }


def _assert_refused_early(tmp_path, run_dir, message, *extra):
  before = _files(run_dir)
  refused = _train(tmp_path,
                   '--rounds=3',
                   *extra,
                   env_extra=_without_tensorflow(tmp_path))
  assert refused.returncode == 2, refused.stderr
  assert message in refused.stderr, refused.stderr
  assert 'Traceback' not in refused.stderr
  assert _files(run_dir) == before  # Nothing written, nothing lost.


def test_a_twin_runs_checkpoint_is_refused(finished_run, tmp_path):
  run_dir = _copy(finished_run, tmp_path)
  # The same flags, another run: its checkpoints carry another run id.
  with open(os.path.join(run_dir, resume.RUN_MARKER), 'w') as f:
    f.write('tff-dp run directory\nrun_id=' + '0' * 32 + '\n')
  _assert_refused_early(tmp_path, run_dir, 'belongs to another run')


def test_a_checkpoint_whose_ledger_was_cut_is_refused(finished_run, tmp_path):
  run_dir = _copy(finished_run, tmp_path)

  newest = _newest(run_dir)

  def cut(meta):
    # The central ledger is a reference to the first bytes of its journal
    # (tff_dp.program.ledger_journal): refer to its first round only.
    reference = meta['ledgers']['central']
    with open(os.path.join(os.path.dirname(newest), reference['journal']),
              'rb') as f:
      prefix = b''.join(f.read().splitlines(keepends=True)[:2])
    reference.update(records=1,
                     bytes=len(prefix),
                     sha256=hashlib.sha256(prefix).hexdigest())

  _rewrite_meta(newest, cut)
  _assert_refused_early(tmp_path, run_dir, 'ledgers charge [1] rounds')


def test_a_checkpoint_of_other_data_is_refused(finished_run, tmp_path):
  run_dir = _copy(finished_run, tmp_path)

  def other_data(meta):
    meta['data_fingerprint'] = 'sha256:' + '1' * 64

  _rewrite_meta(_newest(run_dir), other_data)
  _assert_refused_early(tmp_path, run_dir, 'the training data changed')


def test_fewer_rounds_than_completed_is_refused(finished_run, tmp_path):
  run_dir = _copy(finished_run, tmp_path)
  before = _files(run_dir)
  refused = _train(tmp_path,
                   '--rounds=1',
                   env_extra=_without_tensorflow(tmp_path))
  assert refused.returncode == 2
  assert '--rounds=1: the run already completed 2 rounds' in refused.stderr
  assert _files(run_dir) == before


def test_fallback_past_a_corrupt_unreleased_checkpoint_resumes(
    finished_run, tmp_path):
  """A crash after round 2's checkpoint but before its ledger and values,
  and that checkpoint corrupt: the run falls back to round 1, moves the
  corrupt one aside and checkpoints round 2 again (it used to wedge)."""
  run_dir = _copy(finished_run, tmp_path)
  with open(os.path.join(run_dir, 'metrics.csv')) as f:
    lines = f.readlines()
  with open(os.path.join(run_dir, 'metrics.csv'), 'w') as f:
    f.writelines(lines[:2])  # Header and round 1.
  json_edits.rewrite(os.path.join(run_dir, 'ledger.json'),
                     lambda ledger: ledger.update(rounds=ledger['rounds'][:1]))
  with open(os.path.join(_newest(run_dir), 'state.npz'), 'r+b') as f:
    f.seek(100)
    f.write(b'\x00\xff\x00\xff')
  resumed = _train(tmp_path)
  assert resumed.returncode == 0, resumed.stderr
  assert 'moved an invalid checkpoint aside' in resumed.stdout
  assert glob.glob(os.path.join(run_dir, 'checkpoints', 'corrupt-round_*'))
  assert os.path.basename(_newest(run_dir)) == 'round_00000002'
  with open(os.path.join(run_dir, 'ledger.json')) as f:
    assert len(json.load(f)['rounds']) == 2

"""The resume rules that need no training: flag comparison, run directories."""

import os

import pytest

from tff_dp.cli import exits
from tff_dp.cli import train
from tff_dp.program import resume
from tff_dp.program import run_lock


def test_changed_privacy_flag_is_a_difference():
  saved = {'noise_multiplier': 1.0, 'rounds': 10}
  current = {'noise_multiplier': 1.2, 'rounds': 20}
  assert resume.config_differences(
      saved, current, {}) == ['--noise_multiplier: checkpoint 1.0, now 1.2']


def test_flag_added_since_the_checkpoint_compares_with_its_default():
  saved = {'noise_multiplier': 1.0}
  defaults = {'client_data': '', 'local_dp': 'none'}
  assert resume.config_differences(saved, {
      'noise_multiplier': 1.0,
      'client_data': '',
      'local_dp': 'none'
  }, defaults) == []
  assert resume.config_differences(saved, {
      'noise_multiplier': 1.0,
      'client_data': '',
      'local_dp': 'laplace'
  }, defaults) == ["--local_dp: checkpoint 'none', now 'laplace'"]


def _check_flags(saved, current, **kwargs):
  resume.check_flags({'config': saved},
                     path='ckpt',
                     round_num=5,
                     config=current,
                     defaults={},
                     **kwargs)


def test_flags_alone_are_checked_as_the_checkpoint_check_does():
  saved = {'noise_multiplier': 1.0, 'clip': 0.5, 'rounds': 10}
  _check_flags(saved, dict(saved, rounds=20))  # Resumable.
  with pytest.raises(resume.ResumeError,
                     match='these flags differ from the checkpoint being '
                     'resumed: --clip: checkpoint 0.5, now 0.3$'):
    _check_flags(saved, dict(saved, clip=0.3))
  with pytest.raises(resume.ResumeError, match='--rounds=4: the run already'):
    _check_flags(saved, dict(saved, rounds=4))
  with pytest.raises(resume.ResumeError, match='ckpt: not a checkpoint'):
    resume.check_flags({}, path='ckpt', round_num=5, config=saved, defaults={})


def test_a_setting_not_resolved_yet_is_left_to_the_checkpoint_check():
  # --target_epsilon's noise multiplier is calibrated on the data, later.
  saved = {'noise_multiplier': 0.83, 'target_epsilon': 5.0}
  later = ('noise_multiplier',)
  _check_flags(saved, dict(saved, noise_multiplier=1.0), unresolved=later)
  with pytest.raises(resume.ResumeError,
                     match='--target_epsilon: checkpoint 5.0, now 6.0$'):
    _check_flags(saved,
                 dict(saved, noise_multiplier=1.0, target_epsilon=6.0),
                 unresolved=later)


def test_fallback_past_a_released_round_is_refused():
  resume.check_fallback(checkpoint_round=5, released=5, skipped=[])
  with pytest.raises(resume.ResumeError, match='rounds 5..6 were released'):
    resume.check_fallback(checkpoint_round=4, released=6, skipped=['bad'])


def test_run_directory_is_marked_before_anything_is_written(tmp_path):
  with train.open_run_dir(str(tmp_path), 'run') as opened:
    run_dir = opened.path
    assert not opened.resume
    assert sorted(os.listdir(run_dir)) == sorted(
        [train.RUN_MARKER, run_lock.LOCK_FILE])
    # Killed right after the worker started: only the marker and worker.log.
    with open(os.path.join(run_dir, 'worker.log'), 'w') as f:
      f.write('started\n')
  with train.open_run_dir(str(tmp_path), 'run') as opened:
    assert (opened.path, opened.resume) == (run_dir, True)


def test_foreign_directory_is_refused(tmp_path):
  os.makedirs(tmp_path / 'photos')
  (tmp_path / 'photos' / 'cat.jpg').write_bytes(b'\xff\xd8')
  with pytest.raises(exits.UserError, match='not a tff-dp run directory'):
    train.open_run_dir(str(tmp_path), 'photos')


@pytest.mark.parametrize(
    'text',
    [
        'round,eval/loss\nabc,1.0\n',  # Not a round number.
        'epoch,eval/loss\n1,1.0\n',  # No round column.
        b'round,eval/loss\n1,\xff\xfe\n',  # Not UTF-8.
    ])
def test_a_malformed_metrics_file_is_refused_by_name(tmp_path, text):
  path = tmp_path / 'metrics.csv'
  if isinstance(text, bytes):
    path.write_bytes(text)
  else:
    path.write_text(text)
  with pytest.raises(resume.ResumeError, match='metrics.csv is not a'):
    resume.released_rounds(str(tmp_path), csv_path=str(path))


def test_run_ids_are_random_and_kept(tmp_path):
  first, second = tmp_path / 'a', tmp_path / 'b'
  first.mkdir()
  second.mkdir()
  run_id = resume.ensure_run_id(str(first))
  assert resume.ensure_run_id(str(first)) == run_id == resume.read_run_id(
      str(first))
  assert resume.ensure_run_id(str(second)) != run_id

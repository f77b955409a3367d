"""A worker started early (`worker_launch.prestart`) is adopted once, or stopped."""

import pytest

from tff_dp.execution import runtime
from tff_dp.execution import worker_launch

pytestmark = pytest.mark.tff


def _prestarted_process():
  return worker_launch._prestarted[1].process  # pylint: disable=protected-access


def test_the_runtime_adopts_the_prestarted_worker(tmp_path):
  log_path = str(tmp_path / 'worker.log')
  worker_launch.prestart(log_path=log_path)
  pid = _prestarted_process().pid

  with runtime.local_runtime(log_path=log_path) as worker:
    assert worker.pid == pid
    assert worker_launch._prestarted is None  # pylint: disable=protected-access

  assert not worker.alive()


def test_an_unused_prestarted_worker_is_stopped(tmp_path):
  worker_launch.prestart(log_path=str(tmp_path / 'worker.log'))
  process = _prestarted_process()

  worker_launch.discard_prestarted()

  assert process.poll() is not None
  assert worker_launch._prestarted is None  # pylint: disable=protected-access

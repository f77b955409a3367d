"""Output sinks: TFF release managers behind the one allow-list gate."""

import glob
import math
import os

import pytest
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.compat.proto import event_pb2
import tensorflow_federated as tff

from tff_dp.program import canary_statistics
from tff_dp.program import release
from tff_dp.program import sinks

pytestmark = pytest.mark.tff


@pytest.fixture
def memory_sink(monkeypatch):
  """One more row in SINKS, as a new sink would add: TFF's memory manager."""
  managers = []

  def build(run_dir):
    del run_dir
    managers.append(tff.program.MemoryReleaseManager())
    return managers[-1]

  monkeypatch.setattr(sinks, 'SINKS',
                      (*sinks.SINKS, sinks.Sink('memory', build)))
  return managers


def test_every_sink_gets_every_released_row(tmp_path, memory_sink):
  releaser = release.Releaser(str(tmp_path),
                              private=True,
                              allow_nonprivate=False)
  releaser.release(1, {'privacy/epsilon_rdp': 0.5})
  releaser.release(2, {'privacy/epsilon_rdp': 0.7})
  releaser.close()
  assert memory_sink[0].values() == {
      1: {
          'privacy/epsilon_rdp': 0.5
      },
      2: {
          'privacy/epsilon_rdp': 0.7
      }
  }
  with open(sinks.csv_path(str(tmp_path))) as f:
    assert f.read().splitlines()[1:] == ['1,0.5', '2,0.7']
  assert os.listdir(sinks.tensorboard_dir(str(tmp_path)))


def test_a_refused_key_reaches_no_sink(tmp_path, memory_sink):
  releaser = release.Releaser(str(tmp_path),
                              private=True,
                              allow_nonprivate=False)
  with pytest.raises(release.ReleaseError, match='nonprivate/train_loss'):
    releaser.release(1, {
        'privacy/epsilon_rdp': 0.5,
        'nonprivate/train_loss': 2.0
    })
  releaser.close()
  assert memory_sink[0].values() == {}
  with open(sinks.csv_path(str(tmp_path))) as f:
    assert len(f.read().splitlines()) <= 1  # At most the header.


def test_the_csv_record_is_written_last():
  # A crash between sinks leaves the others ahead of metrics.csv, which
  # replay rebuilds them from; never metrics.csv ahead of them.
  assert sinks.SINKS[-1].name == 'metrics.csv'


def _points(run_dir, tag):
  """(step, value) of every scalar event of `tag` in the run's event files."""
  points = []
  for path in glob.glob(os.path.join(sinks.tensorboard_dir(run_dir),
                                     'events.*')):
    for raw in event_file_loader.RawEventFileLoader(path).Load():
      event = event_pb2.Event.FromString(raw)
      points += [(event.step, v.simple_value)
                 for v in event.summary.value
                 if v.tag == tag]
  return sorted(points)


def test_a_value_tensorboard_cannot_draw_is_no_point_but_stays_in_the_csv(
    tmp_path):
  # An audit's estimate is NaN while it is undefined; TensorBoard would draw
  # the series as an empty chart.
  key = canary_statistics.KEYS[0]
  releaser = release.Releaser(str(tmp_path),
                              private=True,
                              allow_nonprivate=False)
  releaser.release(1, {key: math.nan, 'privacy/epsilon_rdp': 0.5})
  releaser.release(2, {key: 1.5, 'privacy/epsilon_rdp': 0.7})
  releaser.close()
  with open(sinks.csv_path(str(tmp_path))) as f:
    assert 'nan' in f.read()
  assert _points(str(tmp_path), key) == [(2, 1.5)]
  # Rebuilt from metrics.csv on resume: the same.
  releaser = release.Releaser(str(tmp_path),
                              private=True,
                              allow_nonprivate=False)
  releaser.replay([{'round': '1', key: 'nan', 'privacy/epsilon_rdp': '0.5'}])
  releaser.close()
  assert _points(str(tmp_path), key) == []
  assert _points(str(tmp_path), 'privacy/epsilon_rdp') == [(1, 0.5)]

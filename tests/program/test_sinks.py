"""Output sinks: TFF release managers behind the one allow-list gate."""

import os

import pytest
import tensorflow_federated as tff

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

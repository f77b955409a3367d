"""A run's copy of the client files goes once its process is dead, zombies included.

`grouped_data.remove_orphaned_client_files` alone (pure Python); the run that
calls it is tested in test_grouped_fedavg.
"""

import os

from tests.helpers import workers
from tff_dp.algorithms import grouped_data


def test_files_of_an_unreaped_killed_run_are_removed(tmp_path):
  live = tmp_path / f'tff-dp-clients-{os.getpid()}-live'
  live.mkdir()
  with workers.zombie() as pid:
    orphan = tmp_path / f'tff-dp-clients-{pid}-zombie'
    orphan.mkdir()
    (orphan / 'x0.bin').write_bytes(b'data')
    removed = grouped_data.remove_orphaned_client_files(str(tmp_path))
  assert removed == [str(orphan)]
  assert live.exists()

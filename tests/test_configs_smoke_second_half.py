"""The other half of tests/test_configs_smoke.py's configs.

A file of its own so that the test runner's two workers (`--dist loadfile`
sends each file to one worker) train the two halves at the same time.
"""

import pytest

import test_configs_smoke as smoke


@pytest.mark.e2e
def test_second_half_of_the_configs_trains_two_rounds(tmp_path):
  smoke.train_and_check(tmp_path, smoke.CONFIGS[1::2])


def test_the_two_halves_are_every_config():
  halves = smoke.CONFIGS[0::2] + smoke.CONFIGS[1::2]
  assert sorted(halves) == smoke.CONFIGS and len(smoke.CONFIGS) > 2

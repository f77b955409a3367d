"""The other half of tests/program/test_configs_smoke.py's default-tier configs.

A file of its own so that the test runner's two workers (`--dist loadfile`
sends each file to one worker) train the two halves at the same time.
"""

import pytest

from tests.helpers import configs_smoke as smoke


@pytest.mark.e2e
def test_second_half_of_the_configs_trains_two_rounds(tmp_path):
  smoke.train_and_check(tmp_path, smoke.FAST_CONFIGS[1::2])


def test_the_tiers_are_every_config_once():
  halves = smoke.FAST_CONFIGS[0::2] + smoke.FAST_CONFIGS[1::2]
  assert sorted(halves + smoke.SLOW_CONFIGS) == smoke.CONFIGS
  assert len(smoke.FAST_CONFIGS) > 2 and set(smoke.FAST_CONFIGS) <= set(
      smoke.CONFIGS)

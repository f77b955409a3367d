"""Every config in configs/ trains end to end in a smoke version (2 rounds),
and the planner (`./run.sh epsilon`) gives the epsilons each run reports.

The default tier trains one config per mechanism family (`FAST_CONFIGS`);
the slow tier (`--run-slow`) trains the others: the same mechanisms with
other optimizers, models and datasets, whose own tests cover them too.

The configs run one after another in a subprocess (tests/helpers/
configs_smoke.py run as a script, where the machinery of both halves lives),
so TensorFlow is imported once per half: each config still goes through the
program's own path (flag parsing, checks, data, the experiment, the run
directory) and its own TFF worker. The configs are split in two halves, this
file's and tests/program/test_configs_smoke_second_half.py's, so that the test
runner's two workers (`--dist loadfile`) share the ~3 minutes.
"""

import pytest

from tests.helpers import configs_smoke as smoke


@pytest.mark.e2e
def test_first_half_of_the_configs_trains_two_rounds(tmp_path):
  smoke.train_and_check(tmp_path, smoke.FAST_CONFIGS[0::2])


@pytest.mark.e2e
@pytest.mark.slow  # ~2.5 minutes.
def test_the_other_configs_train_two_rounds(tmp_path):
  smoke.train_and_check(tmp_path, smoke.SLOW_CONFIGS)

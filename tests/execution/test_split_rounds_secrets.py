"""What the remote workers receive of a split round: no noise key, no server step.

`tff_dp.execution.split_rounds` sends a round's `up_to_merge` (the clients'
work up to the aggregation) to the workers and runs `merge` and
`after_merge` on the driver. The noise key of the DP query is a constant of
the computation (`tff_dp.mechanisms.noise_seeds`): here a recognizable key
is planted, and it is found in `after_merge` (the control: the search works)
and in neither computation a worker runs. Nothing is executed.
"""

import pytest
from tensorflow_federated.python.core.backends.native import mergeable_comp_compiler

from tests.helpers import central_dp
from tests.helpers import noise_keys
from tff_dp.algorithms import learning_process
from tff_dp.algorithms import models
from tff_dp.config import Algorithm
from tff_dp.config import ClientWeighting
from tff_dp.config import DpMechanism
from tff_dp.config import ModelKind
from tff_dp.config import ServerOptimizer
from tff_dp.privacy import run_secrets


@pytest.mark.tff
@pytest.mark.parametrize(
    'mechanism', [DpMechanism.GAUSSIAN_FIXED, DpMechanism.GAUSSIAN_ADAPTIVE])
def test_the_workers_part_holds_no_noise_key(mechanism, monkeypatch):
  monkeypatch.setattr(run_secrets, 'new_noise_key', lambda: noise_keys.KEY)
  process = learning_process.build_learning_process(
      model_fn=models.build_model_fn(ModelKind.LOGISTIC_REGRESSION,
                                     input_dim=4,
                                     num_classes=3,
                                     hidden_units=1,
                                     seed=7),
      algorithm=Algorithm.FEDAVG,
      model_aggregator=learning_process.build_model_aggregator(
          dp=central_dp.settings(mechanism,
                                 noise_multiplier=1.0,
                                 clients_per_round=70,
                                 clip=1.0),
          client_weighting=ClientWeighting.UNIFORM,
          weight_cap=None),
      client_learning_rate=0.1,
      client_momentum=0.0,
      server_optimizer=learning_process.build_server_optimizer(
          ServerOptimizer.SGD, learning_rate=1.0, momentum=0.0))
  form = mergeable_comp_compiler.compile_to_mergeable_comp_form(process.next)
  assert noise_keys.holds_key(form.after_merge)  # The control: on the driver.
  assert not noise_keys.holds_key(form.up_to_merge)
  assert not noise_keys.holds_key(form.merge)

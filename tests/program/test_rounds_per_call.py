"""Which runs put several rounds in one TFF call (pure Python)."""

import pytest

from tests.helpers import flag_configs
from tff_dp import simulation_path
from tff_dp.checks import ConfigError

_AUTO = simulation_path.AUTO_ROUNDS_PER_CALL
_config = flag_configs.smoke_config


@pytest.mark.parametrize(
    'overrides, clients_per_call, expected',
    [
        ({}, 64, _AUTO),
        ({
            'rounds_per_call': 3
        }, 64, 3),
        ({
            'rounds_per_call': 1
        }, 64, 1),
        # TFF's one-client-per-call path: asked for, or chosen automatically.
        ({
            'clients_per_call': 1
        }, 1, 1),
        ({}, 1, 1),
        # The audit reads the model after every round.
        ({
            'audit_canaries': 4
        }, 64, 1),
    ])
def test_resolve_rounds_per_call(overrides, clients_per_call, expected):
  assert simulation_path.resolve_rounds_per_call(
      _config(**overrides), clients_per_call=clients_per_call) == expected


@pytest.mark.parametrize('overrides, clients_per_call, named', [
    ({
        'clients_per_call': 1
    }, 1, 'grouped path'),
    ({}, 1, 'grouped path'),
    ({
        'audit_canaries': 4
    }, 64, '--audit_canaries=4'),
    ({
        'workers': 'host:1',
        'worker_certs': 'certs'
    }, 64, '--workers'),
])
def test_rounds_that_cannot_share_a_call_are_refused(overrides,
                                                     clients_per_call, named):
  config = _config(rounds_per_call=5, **overrides)
  with pytest.raises(ConfigError, match='rounds_per_call=5') as raised:
    simulation_path.resolve_rounds_per_call(config,
                                            clients_per_call=clients_per_call)
  assert named in str(raised.value)


def test_workers_run_one_round_per_call_automatically():
  config = _config(workers='host:1', worker_certs='certs')
  assert simulation_path.resolve_rounds_per_call(config,
                                                 clients_per_call=1) == 1

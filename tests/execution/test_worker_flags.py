"""Which --workers settings run where, and the refusals, before any data is loaded.

Pure Python: the configuration is parsed by the training program's own flag
definitions and checked by `config_checks.check_config`.
"""

from absl import flags
import pytest

from tff_dp import config_checks
from tff_dp import simulation_path
from tff_dp.checks import ConfigError
from tff_dp.cli import cli_flags

_WORKERS = ('--workers=127.0.0.1:7001,127.0.0.1:7002', '--worker_certs=certs')
_SHARDED = ('--dataset=sqlite', '--client_data=shards/manifest.json')


def _config(*args):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv(['train', *args])
  return cli_flags.config_from_flags(fv)


@pytest.mark.parametrize(
    'args,expected',
    [
        (_WORKERS + ('--clients_per_call=0',), 1),
        (_WORKERS + _SHARDED, simulation_path.AUTO_CLIENTS_PER_CALL),
        (_WORKERS + _SHARDED + ('--clients_per_call=8',), 8),
        # Non-private FedAvg too (tff_dp.algorithms.grouped_mean).
        (_WORKERS + _SHARDED +
         ('--dp_mechanism=none', '--client_weighting=num_examples'),
         simulation_path.AUTO_CLIENTS_PER_CALL),
        # LoRA's adapters train on the grouped path too (frozen weights as
        # constants of the client computation).
        (_WORKERS + _SHARDED +
         ('--trainable=lora',), simulation_path.AUTO_CLIENTS_PER_CALL),
    ])
def test_the_path_each_workers_setting_runs(args, expected):
  config = _config(*args)
  config_checks.check_config(config)
  assert simulation_path.resolve_clients_per_call(config,
                                                  in_memory=False) == expected


@pytest.mark.parametrize(
    'args,message',
    [
        (_WORKERS + ('--clients_per_call=5',),
         "--clients_per_call=5: the grouped path under --workers reads each "
         "worker's own shard"),
        (_WORKERS + _SHARDED + ('--clients_per_call=1',),
         '--clients_per_call=1: with a sharded --client_data'),
        # What the grouped path does not implement cannot read shards.
        (_WORKERS + _SHARDED +
         ('--dp_mechanism=none', '--example_dp', '--client_epochs=2'),
         '--client_data=shards/manifest.json: a sharded import trains on the '
         'grouped path, which does not implement --example_dp=True with '
         '--client_epochs=2'),
        (_WORKERS + _SHARDED +
         ('--on_worker_loss=continue', '--client_sampling=fixed_size'),
         '--on_worker_loss=continue: with a sharded --client_data'),
        (('--on_worker_loss=continue',),
         '--on_worker_loss=continue: is used only with --workers'),
        (_WORKERS + _SHARDED + ('--evaluation=federated', '--eval_clients=5',
                                '--release_nonprivate_metrics'),
         '--evaluation=federated: reads held-out clients\' examples on the '
         'driver'),
    ])
def test_settings_that_cannot_run_are_refused_naming_the_flag(args, message):
  with pytest.raises(ConfigError) as raised:
    config_checks.check_config(_config(*args))
  assert str(raised.value).startswith(message), str(raised.value)


def test_continue_with_sharded_poisson_sampling_passes():
  config_checks.check_config(
      _config(*_WORKERS, *_SHARDED, '--on_worker_loss=continue'))

"""tff-dp pretraining program: central training on public clients only.

Usage (one command line; `python -m tff_dp.cli.pretrain` is the same):
  ./run.sh pretrain --dataset=python_stdlib --model=transformer
      --steps=300 --output=pretrained/stdlib
  ./run.sh train --dataset=python_stdlib --model=transformer
      --init_from=pretrained/stdlib [--flag=value ...]

Trains the model the training flags describe (--model, its size flags, the
data's input and vocabulary) CENTRALLY and WITHOUT noise on the clients the
dataset declares public (python_stdlib's public modules; for data with
natural clients, those of --public_clients=FILE or --public_fraction=F,
`tff_dp.data.public_clients`), never on the private population; data with
no public clients is refused. Train with the same declaration: a run whose
population holds a client the checkpoint was pretrained on is refused. Writes --output (a directory):
weights.h5 and pretrained.json (the model's signature, the dataset, the
public clients used, the data's fingerprint; `tff_dp.program.pretrained`).
It takes every training flag, so one --flagfile serves both programs; the
flags of federated training and privacy are not used here. Bad values stop
the program with one line naming the flag (exit 2).
"""

if __name__ == '__main__':
  # `python -m tff_dp.cli.pretrain`: Ctrl-C during the imports below is one
  # line, as in the other programs (`tff_dp.cli.launch`).
  from tff_dp.cli import launch  # pylint: disable=g-import-not-at-top
  launch.start('tff-dp-pretrain')

# pylint: disable=g-import-not-at-top,wrong-import-position
import sys
import time

from absl import flags

from tff_dp import config_checks
from tff_dp.checks import ConfigError
from tff_dp.cli import checked_flags
from tff_dp.cli import cli_flags
from tff_dp.cli import exits
from tff_dp.cli import program_help
from tff_dp.program import prepare
from tff_dp.program import pretrained_meta

# pylint: enable=g-import-not-at-top,wrong-import-position

PROGRAM = 'tff-dp-pretrain'
FLAGS = flags.FLAGS


def define_pretrain_flags(fv: flags.FlagValues) -> None:
  """Central pretraining's own flags."""
  flags.DEFINE_string('output',
                      None, 'Directory to write the checkpoint to (weights.h5, '
                      'pretrained.json); train from it with --init_from.',
                      flag_values=fv)
  checked_flags.define_int(fv,
                           'steps',
                           300,
                           'Central Adam steps on the public clients.',
                           lower=1,
                           upper=10_000_000)
  checked_flags.define_int(fv,
                           'batch_size',
                           32,
                           'Examples (windows) per pretraining step.',
                           lower=1,
                           upper=1_000_000)
  checked_flags.define_float(fv,
                             'learning_rate',
                             1e-3,
                             'Adam learning rate of pretraining.',
                             lower=0.0,
                             upper=1e3,
                             lower_open=True)


def run(argv: list[str]) -> None:
  """Pretrains and writes the checkpoint; ConfigError for bad input."""
  if len(argv) > 1:
    raise exits.UserError(f'unexpected positional arguments: {argv[1:]}')
  if not FLAGS.output:
    raise ConfigError('output', FLAGS.output,
                      'is required: the checkpoint directory to write')
  config = cli_flags.config_from_flags(FLAGS)
  if config.init_from:
    raise ConfigError(
        'init_from', config.init_from,
        'is for ./run.sh train; pretraining starts from the '
        'seeded initial model')
  config_checks.check_config(config)
  data = prepare.load_data(config)
  config_checks.check_model_fits_data(config,
                                      image_shape=data.image_shape,
                                      vocab_size=data.vocab_size)
  x, _ = pretrained_meta.public_examples(config, data)
  # Imported only now: TensorFlow, after the cheap checks.
  from tff_dp.execution import runtime  # pylint: disable=g-import-not-at-top
  from tff_dp.program import pretrained  # pylint: disable=g-import-not-at-top
  # Importing TFF installs a context that would start a worker on first use:
  # pretraining runs no TFF computation.
  runtime.disable_default_context()
  print(f'{PROGRAM}: {len(data.public_client_ids)} public clients of '
        f'--dataset={config.dataset.value} ({len(x)} examples); the '
        f'{data.population} private clients are not read')
  start = time.monotonic()
  model, final = pretrained.pretrain(config,
                                     data,
                                     steps=FLAGS.steps,
                                     batch_size=FLAGS.batch_size,
                                     learning_rate=FLAGS.learning_rate)
  seconds = time.monotonic() - start
  training = {
      'steps': FLAGS.steps,
      'batch_size': FLAGS.batch_size,
      'learning_rate': FLAGS.learning_rate,
      'optimizer': 'adam',
      'seed': config.seed,
      'final_batch_metrics': final,
      'seconds': round(seconds, 1),
  }
  path = pretrained.save(FLAGS.output,
                         model,
                         config=config,
                         data=data,
                         training=training)
  metrics = ', '.join(f'{k} {v:.4g}' for k, v in sorted(final.items()))
  print(f'{PROGRAM}: {FLAGS.steps} steps in {seconds:.1f} s; last batch on '
        f'public data: {metrics}')
  print(f'{PROGRAM}: wrote {path}; train from it with --init_from='
        f'{FLAGS.output}')


def entry_point() -> None:
  """Console-script entry point; errors are one line, never a traceback."""
  cli_flags.define_train_flags(FLAGS)
  define_pretrain_flags(FLAGS)
  program_help.define_help_flags(
      FLAGS,
      doc=__doc__,
      groups=program_help.flag_groups((
          ('Pretraining', define_pretrain_flags),) +
                                      cli_flags.TRAIN_FLAG_GROUPS))
  exits.run_program(PROGRAM,
                    lambda: run(FLAGS(sys.argv)),
                    user_errors=(ConfigError, exits.UserError),
                    interrupted='interrupted; no checkpoint was written')


if __name__ == '__main__':
  entry_point()

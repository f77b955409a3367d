"""The privacy statement a run writes into its directory: at its end, or when stopped.

`tff_dp.program.privacy_statement` words it; this module decides what it
covers and writes it (privacy_statement.txt and TensorBoard's text). A run
that ends (its last round, or its budget) states the rounds it ran. A run
stopped before (Ctrl-C, SIGTERM, an error) used to leave released rows and a
ledger without a statement; it now states the rounds its newest checkpoint
charges, which is what `./run.sh epsilon --run_dir` reports and what a
resumed run continues from: every released row is among them, and a round
charged in memory but not checkpointed was released nowhere. Pure Python.
"""

import json
import os

from tff_dp import atomic_io
from tff_dp.program import pretrained_meta
from tff_dp.program import privacy_statement


def stopped_words(error: BaseException) -> str:
  """Why a run stopped early, in words for its statement: the kind of
  interruption or error only (an error's message could quote client data)."""
  if isinstance(error, KeyboardInterrupt):
    return 'interrupted (SIGINT, Ctrl-C)'
  if not isinstance(error, Exception):
    # `tff_dp.cli.signals.Terminated` says which signal: 'SIGTERM'.
    name = str(error) if str(error).startswith('SIG') else ''
    return f'interrupted ({name or type(error).__name__})'
  return f'stopped by an error ({type(error).__name__})'


def write_stopped(config,
                  data,
                  run_dir,
                  privacy,
                  ledgers,
                  releaser,
                  size,
                  error: BaseException,
                  losses=None) -> None:
  """The statement of a run stopped before its end: of the rounds its newest
  checkpoint charges (`ledgers`), as `./run.sh epsilon --run_dir` reports.

  A round charged in memory but not checkpointed was released nowhere (a
  resumed run runs it again). Writing the statement must not hide `error`:
  its own failure is only noted on it.
  """
  try:
    if privacy.ledger.rounds != len(ledgers['central']['rounds']):
      privacy.restore_json(json.loads(json.dumps(ledgers)))
    privacy.save(run_dir)  # ledger.json as the checkpoint, if it lagged.
    statement = privacy_statement.privacy_statement(
        config,
        population=data.population,
        rounds_run=privacy.ledger.rounds,
        privacy=privacy,
        released_keys=releaser.released_keys,
        model_size=size,
        public_data=pretrained_meta.public_data_sentence(
            config.init_from, data),
        stopped=stopped_words(error))
    if losses is not None:
      statement += losses.statement()
    atomic_io.write_text_atomic(os.path.join(run_dir, 'privacy_statement.txt'),
                                statement)
    releaser.write_text('privacy_statement', statement)
  except Exception as e:  # pylint: disable=broad-except
    error.add_note(f'(the privacy statement of the released rounds was not '
                   f'written: {type(e).__name__}: {e})')


def write(config,
          data,
          run_dir,
          result,
          privacy,
          releaser,
          audit,
          size,
          losses=None) -> None:
  """Writes the privacy statement of what the run released."""
  statement = privacy_statement.privacy_statement(
      config,
      population=data.population,
      rounds_run=result.rounds_completed,
      privacy=privacy,
      released_keys=releaser.released_keys,
      canary_audit=audit,
      model_size=size,
      public_data=pretrained_meta.public_data_sentence(config.init_from, data))
  if losses is not None:
    statement += losses.statement()
  atomic_io.write_text_atomic(os.path.join(run_dir, 'privacy_statement.txt'),
                              statement)
  releaser.write_text('privacy_statement', statement)

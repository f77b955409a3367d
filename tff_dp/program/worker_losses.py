"""`--on_worker_loss=continue`: a run that goes on when a remote worker is lost.

`tff_dp.execution.split_rounds` completes the round without the lost worker
and calls `WorkerLosses.on_lost`, which decides what happens to that
worker's clients and records the loss:

* unsharded data (the driver sends the examples): the lost worker's slice
  runs again on a surviving worker; every client stays reachable, the
  population, the sampler and the mechanism are unchanged;
* sharded data (each worker reads its own shard): the lost shard's clients
  are unreachable. They are dropped from the round in which the worker was
  lost and from every later one (`shard_routing.RoutedGroups.drop_worker`).

Why the privacy accounting stays exact (also in the privacy statement and
the README, "Running on several machines"):

* The noise, the clip, the divisor (the configured clients per round, a
  constant) and the sampler's q are unchanged, so every released round is
  the same Gaussian mechanism the ledger charges. The expected cohort of the
  reachable clients, q * N', is NOT used as a divisor: it would depend on
  the lost shard's client count.
* Under Poisson sampling each client joins a round independently with
  probability q; leaving out the clients of a lost shard is therefore
  exactly Poisson sampling of the reachable clients with the same q. For a
  reachable client the ledger's events are its exact privacy loss; for a
  client of a lost shard, whose loss stops accruing, they are an upper
  bound. The epsilon stated holds for every client.
* The attempt of the round with the lost worker released nothing: the
  partial sums of the surviving workers are merged with the rest (the
  released round is one release, charged once), and the lost worker's
  partial sum never reached anyone. No epsilon is charged for the failed
  attempt because nothing computed from it is released but the loss itself,
  which must not depend on the clients' data (a host or network failure;
  a worker crashed BY a client's data would leak that client's
  participation, as it would with --on_worker_loss=stop).

The losses are kept in the run directory (`worker_losses.json`, so that a
resumed run still states them) and stated in `privacy_statement.txt`.
"""

import json
import os
from typing import Any, Optional

from tff_dp import atomic_io

FILE_NAME = 'worker_losses.json'


class WorkerLosses:
  """The losses of a run (`--on_worker_loss=continue`) and their handling."""

  def __init__(self, run_dir: str, routed: Optional[Any], *, resume: bool):
    """Args:
      run_dir: The run's directory (`worker_losses.json`).
      routed: The sharded run's `shard_routing.RoutedGroups`, else None.
      resume: Keep the losses an interrupted run recorded.
    """
    self._path = os.path.join(run_dir, FILE_NAME)
    self._routed = routed
    self.round_num: Optional[int] = None
    self.events: list[dict[str, Any]] = []
    if resume and os.path.exists(self._path):
      with open(self._path, encoding='utf-8') as f:
        self.events = list(json.load(f))

  def track(self, round_datasets):
    """`round_datasets`, remembering which round is being built."""

    def tracked(round_num, cohort):
      self.round_num = round_num
      return round_datasets(round_num, cohort)

    return tracked

  def on_lost(self, index: int, name: str, error: Exception) -> bool:
    """`split_rounds`' callback; True: run the worker's slice elsewhere."""
    event = {'round': self.round_num, 'worker': name, 'error': str(error)}
    if self._routed is None:
      event['clients_unreachable'] = 0
      what = 'its clients of this round run on another worker'
    else:
      shard, clients = self._routed.drop_worker(index)
      event.update(shard=shard, clients_unreachable=clients)
      what = (f'the {clients} clients of shard {shard} are unreachable and '
              'no longer sampled')
    self.events.append(event)
    atomic_io.write_text_atomic(self._path, json.dumps(self.events, indent=1))
    print(
        f'tff-dp: WARNING: worker {name} lost in round {self.round_num} '
        f'({error}); continuing without it (--on_worker_loss=continue): '
        f'{what}',
        flush=True)
    return self._routed is None

  def statement(self) -> str:
    """The privacy statement's paragraph on the losses ('' if none)."""
    if not self.events:
      return ''
    lines = ['', 'Workers lost during the run (--on_worker_loss=continue):']
    for e in self.events:
      if e.get('shard') is None:
        lines.append(f"- round {e['round']}: worker {e['worker']}; its "
                     'clients of that round were trained on another worker '
                     '(no client became unreachable).')
      else:
        lines.append(
            f"- round {e['round']}: worker {e['worker']}, serving shard "
            f"{e['shard']}: its {e['clients_unreachable']} clients were "
            f"unreachable from round {e['round']} on (left out of that "
            'round\'s cohort and never sampled again).')
    lines += [
        'Each round was released once and charged once, with the planned '
        'sampling rate, noise and divisor: the ledger is exact for the '
        'clients that stayed reachable and an upper bound for the others '
        '(dropping unreachable clients from a Poisson cohort is Poisson '
        'sampling of the reachable ones with the same q). No epsilon was '
        'charged for the attempt in which a worker was lost: nothing of it '
        'was released but the loss, which this statement assumes to be '
        'independent of the clients\' data (a host or network failure).'
    ]
    return '\n'.join(lines) + '\n'

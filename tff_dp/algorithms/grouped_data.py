"""Host side of the grouped simulation: packing a round's cohort into groups.

`tff_dp.algorithms.grouped_fedavg` runs many simulated clients per TFF client
invocation; this module builds what each invocation receives. A group holds
the clients' example orders, drawn exactly as `tff_dp.program.client_data.
RoundDatasets` draws them, and either the examples themselves (dense mode) or
only the client ids, the examples having been written once per run as raw
files that the TFF worker reads (client-files mode, `write_client_files`).
`GroupedRounds` is the per-round builder the training loop calls, in place of
`RoundDatasets`, when the grouped process runs.
"""

import collections
import os
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np
import tensorflow_federated as tff

from tff_dp import processes

# Keys of a group (see `make_groups`).
X, Y, ORDER, LENGTH, VALID, CLIENT = ('x', 'y', 'order', 'length', 'valid',
                                      'client')


def client_file(directory: str, kind: str, client: int) -> str:
  # tff_dp.algorithms.grouped_client_work builds the same names in TF.
  return os.path.join(directory, f'{kind}{client}.bin')


def write_client_files(client_x: Sequence[np.ndarray],
                       client_y: Sequence[np.ndarray], *,
                       directory: str) -> None:
  """Writes each client's examples as raw files for the TFF worker to read.

  For client i: `x{i}.bin` (little-endian float32, row-major [n_i, d]) and
  `y{i}.bin` (little-endian int32 [n_i], or row-major [n_i, W] for the
  next-token labels of windows of W tokens); 4 * (d + 1) bytes per example
  (4 * (d + W) for next-token labels).

  Args:
    client_x: Features of every client of the population, float32 [n_i, d].
    client_y: Labels of every client, int32 [n_i] (or [n_i, W]).
    directory: Where to write; created if missing, and must be empty, so that
      files of another data set are never read by mistake.

  Raises:
    ValueError: If `directory` is not empty.
  """
  os.makedirs(directory, exist_ok=True)
  if os.listdir(directory):
    raise ValueError(f'{directory} is not empty; client files need a fresh '
                     'directory')
  for client, (x, y) in enumerate(zip(client_x, client_y)):
    np.asarray(x, '<f4').tofile(client_file(directory, 'x', client))
    np.asarray(y, '<i4').tofile(client_file(directory, 'y', client))


def make_groups(
    client_x: Sequence[np.ndarray],
    client_y: Sequence[np.ndarray],
    cohort: Sequence[int],
    *,
    round_num: int,
    seed: int,
    epochs: int,
    group_size: int,
    pad_to_group_size: bool = False,
    with_examples: bool = True,
) -> list[collections.OrderedDict]:
  """Packs a round's cohort into groups of dense arrays, in cohort order.

  Each simulated client's example order is drawn exactly as
  `tff_dp.program.client_data.RoundDatasets` draws it: `rng = np.random.default_rng(
  [seed, round_num, client])`, then one `rng.permutation(n)` per epoch,
  concatenated. With zero noise the grouped process therefore trains on the
  same batches as the reference.

  The clients' examples are concatenated, not padded to a common length:
  every byte of a group is sent to the TFF worker each round (10 MB took
  65-90 ms on 2 cores), and client sizes are often skewed.

  Args:
    client_x: Features of every client of the population, float32 [n_i, d].
    client_y: Labels of every client, int32 [n_i].
    cohort: Indices (into `client_x`) of the round's clients; may be empty.
    round_num: The round (part of the permutation seed).
    seed: The run's data-order seed (`RoundDatasets`' `seed`).
    epochs: Local epochs.
    group_size: Most simulated clients per group.
    pad_to_group_size: Pad the last group with padding slots (no examples,
      `valid` False) up to `group_size`, so that every group has the same
      number of slots.
    with_examples: Include x and y (dense mode); False for a process that
      reads client files (`write_client_files`).

  Returns:
    One OrderedDict per group of k slots holding N examples in total:
      x: float32 [N, d], the clients' examples, client after client;
      y: int32 [N];
      order: int32 [epochs * N], client after client, each client's
        `epochs` concatenated permutations of its OWN example indices
        (0..n_i-1, relative to its first row in x);
      length: int32 [k], n_i (0 for padding slots);
      valid: bool [k], False for padding slots;
      client: int32 [k], the clients' indices (-1 for padding slots).
    Without examples, x and y are left out. An empty cohort gives an empty
    list (zero TFF clients).

  Raises:
    ValueError: For a non-positive `group_size` or `epochs`.
  """
  if group_size < 1 or epochs < 1:
    raise ValueError(f'group_size ({group_size}) and epochs ({epochs}) must '
                     'be >= 1')
  groups = []
  for start in range(0, len(cohort), group_size):
    members = [int(c) for c in cohort[start:start + group_size]]
    orders = []
    for client in members:
      rng = np.random.default_rng([seed, round_num, client])
      n = len(client_y[client])
      orders.append(
          np.concatenate([rng.permutation(n) for _ in range(epochs)
                         ]).astype(np.int32))
    padding = group_size - len(members) if pad_to_group_size else 0
    group = collections.OrderedDict()
    if with_examples:
      group[X] = np.concatenate([client_x[c] for c in members
                                ]).astype(np.float32, copy=False)
      group[Y] = np.concatenate([client_y[c] for c in members
                                ]).astype(np.int32, copy=False)
    group[ORDER] = np.concatenate(orders)
    group[LENGTH] = np.array([len(client_y[c]) for c in members] +
                             [0] * padding, np.int32)
    group[VALID] = np.array([True] * len(members) + [False] * padding)
    group[CLIENT] = np.array(members + [-1] * padding, np.int32)
    groups.append(group)
  return groups


def group_type(
    input_dim: int,
    *,
    with_examples: bool = True,
    label_shape: Sequence[int] = ()) -> tff.Type:
  """TFF type of one group (see `make_groups`); all sizes are dynamic.

  `label_shape`: one example's label, () for a class id, (W,) for the
  next-token ids of a window of W tokens.
  """
  elements = collections.OrderedDict()
  if with_examples:
    elements[X] = tff.TensorType(np.float32, [None, input_dim])
    elements[Y] = tff.TensorType(np.int32, [None, *label_shape])
  elements[ORDER] = tff.TensorType(np.int32, [None])
  elements[LENGTH] = tff.TensorType(np.int32, [None])
  elements[VALID] = tff.TensorType(np.bool_, [None])
  elements[CLIENT] = tff.TensorType(np.int32, [None])
  return tff.to_type(elements)


# Temporary client-file directories are named <prefix><pid>-<random>.
_FILES_PREFIX = 'tff-dp-clients-'


def remove_orphaned_client_files(parent: str) -> list[str]:
  """Removes client-file directories whose run was killed (SIGKILL, power).

  A killed run cannot remove its copy of the client data; the next run does,
  so that the copy lives no longer than it must. Only directories of this
  user whose process is gone (or a zombie nobody reaped) are removed.

  Args:
    parent: The directory the runs create their temporary directories in.

  Returns:
    The directories removed.
  """
  removed = []
  try:
    names = os.listdir(parent)
  except OSError:
    return removed
  for name in names:
    if not name.startswith(_FILES_PREFIX):
      continue
    pid_text = name[len(_FILES_PREFIX):].split('-', 1)[0]
    path = os.path.join(parent, name)
    try:
      owned = os.stat(path).st_uid == os.getuid()
    except OSError:
      continue
    if pid_text.isdigit() and owned and not processes.is_live(int(pid_text)):
      shutil.rmtree(path, ignore_errors=True)
      removed.append(path)
  return removed


def private_files_dir(directory: Optional[str] = None) -> str:
  """A fresh private (0700) directory for client files, named so that a
  later run removes it if this process is killed (`remove_orphaned_client_files`).

  Args:
    directory: Its parent (the system default if None).
  """
  parent = directory or tempfile.gettempdir()
  remove_orphaned_client_files(parent)
  return tempfile.mkdtemp(prefix=f'{_FILES_PREFIX}{os.getpid()}-', dir=parent)


def padding_group(group: tff.Type) -> collections.OrderedDict:
  """A group of one padding slot (`valid` False, no example) of type `group`
  (`group_type`'s, dense or client-files mode): it contributes nothing.

  One slot, not none: the vectorized group computation
  (`tff_dp.algorithms.grouped_vectorized`, a study no program configuration
  runs) fails on a group of zero slots, and the while loop the program runs
  is tested on one-slot padding only (tests/execution/test_shard_routing.py).
  Used to give every round of a fused block the same number of groups
  (`tff_dp.algorithms.fused_rounds`) and every worker of a split round the
  same number of groups (`tff_dp.algorithms.shard_routing`).
  """
  padding = collections.OrderedDict()
  for name, element in tff.structure.iter_elements(group):
    # The slot axis (LENGTH, VALID, CLIENT) has one entry; the example axes
    # (X, Y, ORDER) none.
    size = 1 if name in (LENGTH, VALID, CLIENT) else 0
    padding[name] = np.zeros([size if d is None else d for d in element.shape],
                             element.dtype)
  padding[CLIENT][:] = -1
  return padding


class GroupedRounds:
  """(round, cohort) -> groups, for `tff_dp.program.training_loop` (client-files mode).

  Writes the population's examples once, at construction, to a private
  temporary directory (mode 0700, removed by `close`, or by the next run if
  this one is killed): they are the same client data the process already
  holds in memory, put where the TFF worker can read them, never part of a
  run's outputs.
  """

  def __init__(self,
               client_x: Sequence[np.ndarray],
               client_y: Sequence[np.ndarray],
               *,
               seed: int,
               epochs: int,
               group_size: int,
               directory: Optional[str] = None):
    """Writes the client files.

    Args:
      client_x: Features of every client of the population.
      client_y: Labels of every client.
      seed: The run's data-order seed (as `RoundDatasets`').
      epochs: Local epochs.
      group_size: Most simulated clients per TFF client invocation.
      directory: Parent of the temporary directory (the system default if
        None).
    """
    self._x, self._y = client_x, client_y
    self._seed, self._epochs, self._group_size = seed, epochs, group_size
    self.files_dir = private_files_dir(directory)
    try:
      write_client_files(client_x, client_y, directory=self.files_dir)
    except BaseException:
      self.close()
      raise

  def __call__(self, round_num: int,
               cohort: Sequence[int]) -> list[collections.OrderedDict]:
    return make_groups(self._x,
                       self._y,
                       cohort,
                       round_num=round_num,
                       seed=self._seed,
                       epochs=self._epochs,
                       group_size=self._group_size,
                       with_examples=False)

  def close(self) -> None:
    shutil.rmtree(self.files_dir, ignore_errors=True)

  def __enter__(self) -> 'GroupedRounds':
    return self

  def __exit__(self, *exc) -> None:
    self.close()

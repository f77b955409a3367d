"""Clients declared public: out of the private population, for pretraining.

Public pretraining then private fine-tuning (Xu et al. 2023, "Federated
Learning of Gboard Language Models with Differential Privacy", ACL Industry)
needs data the user treats as public. For data with natural clients (TFF's
Shakespeare and Stack Overflow, EMNIST, CIFAR-100, an imported table) the user
declares some clients public, by name or by a rule on their ids:

* `--public_clients=FILE`: the client ids in FILE, one per line (blank lines
  skipped; leading and trailing spaces stripped), each a training client of
  the data;
* `--public_fraction=F`: every client whose id hashes below F: with h the
  first 8 hex digits of SHA-256 of the UTF-8 id as an integer, public iff
  h / 2**32 < F (about a fraction F of the clients). Like
  `python_stdlib`'s split, it needs no list and depends on the id alone, so
  adding or removing another client moves no one across the split, and it
  never looks at a client's data (a data-dependent choice would be a release).

The loader applies the declaration (`apply`) before anything else sees the
data, in `./run.sh pretrain` and `./run.sh train` alike: the training side is
a view of the private clients only, re-indexed 0..N-1 (as
`held_out.TrainingClients` does for federated evaluation), so the population N
that the sampler draws from, the accountant charges and federated evaluation
holds out from never contains a public client. The view offers the public
clients for pretraining (`public_client_ids`, `public_rule`,
`public_examples()`, as `python_stdlib` does) and a fingerprint that covers
the declaration, so a run resumed with another public set is refused. The
server's test split is the dataset's, unchanged.

Bad declarations raise `ConfigError` naming the flag and its value: both
flags at once, a missing or unreadable file, an empty one, an id that is not
a training client, a fraction that makes no client public, or one that leaves
no private client. Datasets that split one pool of examples into clients
(`--partition`), or that declare their own public clients (`python_stdlib`),
refuse the flags.

Pure Python (numpy); the public examples are read through the source's own
`client_dataset` (tf.data) only when pretraining asks for them.
"""

import dataclasses
import hashlib
from typing import Any, Optional, Sequence

import numpy as np

from tff_dp.checks import ConfigError
from tff_dp.data import registry
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.federated_data import size_statistics

# Datasets that already say which clients are public, or have none to declare.
_OWN_SPLIT = {
    'python_stdlib': 'declares its own public modules (a hash of the path)',
    'python': 'takes the clients Python passes; pretrain on your own data '
              'and pass its checkpoint',
}
_HASH_SCALE = 2**32


@dataclasses.dataclass(frozen=True)
class PublicDeclaration:
  """Which clients the user declares public (module docstring).

  Attributes:
    file: `--public_clients`, a file of client ids ('' for none).
    fraction: `--public_fraction`, in [0, 1) (0 for none).
  """
  file: str = ''
  fraction: float = 0.0

  @property
  def declared(self) -> bool:
    return bool(self.file) or self.fraction > 0

  @property
  def flag(self) -> tuple[str, Any]:
    """(flag name, value) for messages: the flag that declared the set."""
    if self.file:
      return 'public_clients', self.file
    return 'public_fraction', self.fraction

  def rule(self) -> str:
    """How the public clients were chosen, for pretrained.json and the
    privacy statement."""
    if self.file:
      return f'the client ids listed in --public_clients={self.file}'
    return (f'--public_fraction={self.fraction:g}: the clients whose id '
            'hashes below it (SHA-256 of the id, first 8 hex digits / 2**32)')


def id_hash_fraction(client_id: str) -> float:
  """The id's position in [0, 1): first 8 hex digits of SHA-256 / 2**32."""
  digest = hashlib.sha256(client_id.encode('utf-8')).hexdigest()
  return int(digest[:8], 16) / _HASH_SCALE


def read_id_file(path: str) -> list[str]:
  """The client ids of a --public_clients file, in order, without repeats.

  Raises:
    ConfigError: If the file cannot be read, is not UTF-8, or lists no id.
  """
  try:
    with open(path, encoding='utf-8') as f:
      lines = f.read().splitlines()
  except (OSError, UnicodeDecodeError) as e:
    reason = getattr(e, 'strerror', None) or str(e)
    raise ConfigError(
        'public_clients', path,
        f'cannot be read ({reason}); give a file of client ids, '
        'one per line') from e
  ids = list(dict.fromkeys(s.strip() for s in lines if s.strip()))
  if not ids:
    raise ConfigError('public_clients', path,
                      'lists no client id (one per line)')
  return ids


def public_indices(client_ids: Sequence[str], declaration: PublicDeclaration, *,
                   dataset: str) -> np.ndarray:
  """Positions of the public clients in `client_ids`, ascending.

  Raises:
    ConfigError: For an id that is not a client, an empty public set, or one
      that leaves no private client (named by the declaring flag).
  """
  flag, value = declaration.flag
  if declaration.file:
    position = {c: i for i, c in enumerate(client_ids)}
    listed = read_id_file(declaration.file)
    unknown = [c for c in listed if c not in position]
    if unknown:
      more = f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''
      raise ConfigError(
          flag, value, f'{unknown[0]!r}{more} is not a training client of '
          f'--dataset={dataset} ({len(client_ids)} clients)')
    indices = np.array(sorted(position[c] for c in listed), np.int64)
  else:
    indices = np.array([
        i for i, c in enumerate(client_ids)
        if id_hash_fraction(c) < declaration.fraction
    ], np.int64)
  if not len(indices):
    raise ConfigError(
        flag, value, f'makes none of the {len(client_ids)} clients of '
        f'--dataset={dataset} public; raise it')
  if len(indices) == len(client_ids):
    raise ConfigError(
        flag, value, f'makes all {len(client_ids)} clients of --dataset='
        f'{dataset} public and leaves no private client to train on')
  return indices


class PrivateClients:
  """The private clients of a streamed source, re-indexed 0..N-1, and its
  public ones for pretraining.

  Offers what training needs from a streamed source (`population`,
  `input_dim`, `num_classes`, `image_shape`, `vocab_size`, `label_kind`,
  `client_sizes()`, `client_dataset(i)`, `test_dataset()`, `fingerprint()`,
  the banner) and what pretraining needs (`public_client_ids`,
  `public_rule`, `public_examples()`). Nothing is delegated implicitly, so no
  public client can reach training by accident.
  """

  def __init__(self, source: Any, public: np.ndarray,
               declaration: PublicDeclaration):
    self._source = source
    self._public = np.asarray(public, np.int64)
    self._private = np.setdiff1d(np.arange(source.population), self._public)
    self.name = source.name
    self.client_ids = [source.client_ids[i] for i in self._private]
    self.public_client_ids = [source.client_ids[i] for i in self._public]
    self.public_rule = declaration.rule()
    self.input_dim = source.input_dim
    self.num_classes = source.num_classes
    self.image_shape = source.image_shape
    self.vocab_size = source.vocab_size
    self.label_kind = source.label_kind
    sizes = source.client_sizes()
    self._sizes = sizes[self._private]
    self._public_sizes = sizes[self._public]
    self._public_examples: Optional[tuple[np.ndarray, np.ndarray]] = None

  @property
  def population(self) -> int:
    """Number of private clients: the N used for privacy accounting."""
    return len(self.client_ids)

  def fingerprint(self) -> str:
    """SHA-256 over the source's fingerprint (if any) and the public ids."""
    own = getattr(self._source, 'fingerprint', None)
    digest = hashlib.sha256(b'tff-dp public clients v1\n')
    digest.update(f'{own() if callable(own) else None}\n'.encode())
    digest.update('\n'.join(self.public_client_ids).encode('utf-8'))
    return 'sha256:' + digest.hexdigest()

  def client_sizes(self) -> np.ndarray:
    return self._sizes.copy()

  def client_dataset(self, index: int):
    """The examples of private client `index` (unbatched)."""
    return self._source.client_dataset(int(self._private[int(index)]))

  def test_dataset(self):
    return self._source.test_dataset()

  def public_examples(self) -> tuple[np.ndarray, np.ndarray]:
    """The public clients' examples as (features, labels) arrays (read
    once, through the source's own datasets)."""
    if self._public_examples is None:
      xs, ys = [], []
      for i in self._public:
        for x, y in self._source.client_dataset(int(i)).as_numpy_iterator():
          xs.append(x)
          ys.append(y)
      self._public_examples = (np.stack(xs), np.stack(ys))
    return self._public_examples

  def statistics(self) -> dict[str, Any]:
    return size_statistics(self.name, self._sizes)

  def describe(self) -> str:
    lines = self._source.describe().splitlines()
    s = self.statistics()
    lines[0] = (f"Federated data '{s['name']}': {s['clients']} private "
                'clients (the population N for privacy accounting) of '
                f'{self._source.population}')
    lines.insert(
        1, f'  public (never in the population; ./run.sh pretrain): '
        f'{len(self._public)} clients ({int(self._public_sizes.sum())} '
        f'examples) by {self.public_rule}')
    return '\n'.join(lines)


def check_declaration(declaration: PublicDeclaration, *, dataset: str) -> None:
  """The checks that need no data (run before loading it).

  Raises:
    ConfigError: For both flags at once, a dataset that cannot take a
      declaration, or an unreadable or empty file.
  """
  if not declaration.declared:
    return
  flag, value = declaration.flag
  if declaration.file and declaration.fraction > 0:
    raise ConfigError(
        'public_fraction', declaration.fraction,
        f'and --public_clients={declaration.file} both declare public '
        'clients; give one of them')
  if dataset in _OWN_SPLIT:
    raise ConfigError(flag, value, f'--dataset={dataset} {_OWN_SPLIT[dataset]}')
  if registry.spec(dataset).offline:
    raise ConfigError(
        flag, value, f'--dataset={dataset} splits one pool of examples '
        'into clients (--partition), so no client is public data; declare '
        'public clients of data with natural clients (shakespeare, '
        'stackoverflow_nwp, emnist_*, cifar100, sqlite)')
  if declaration.file:
    read_id_file(declaration.file)


def apply(source: Any, declaration: PublicDeclaration, *, dataset: str) -> Any:
  """`source` without its public clients (a `PrivateClients` view), or
  `source` itself when nothing is declared.

  Raises:
    ConfigError: For a declaration `check_declaration` refuses, or a bad
      one (`public_indices`).
  """
  if not declaration.declared:
    return source
  check_declaration(declaration, dataset=dataset)
  if isinstance(
      source,
      FederatedData) or not callable(getattr(source, 'client_dataset', None)):
    raise ConfigError(
        *declaration.flag, f'--dataset={dataset} has no streamed clients to '
        'declare public')
  return PrivateClients(
      source, public_indices(source.client_ids, declaration, dataset=dataset),
      declaration)

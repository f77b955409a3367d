"""Deferred imports of the stack's modules that a training run never uses.

TensorFlow, TFF and TF Privacy import, at their own import time, packages
that `./run.sh train` never calls: jax (through TFF's `tff.jax` frontend and
TensorFlow Lite's `from jax import xla_computation`), TensorFlow Probability
(TF Privacy's discrete Gaussian sampler), scikit-learn (TF Privacy's
logistic regression datasets) and h5py (Keras's HDF5 saving, which tff-dp
uses only for a pretrained checkpoint's weights.h5). Together they took
87-101 MiB of the W1 run's peak RSS and a share of its start-up (issue 21;
benchmarks/README.md, "Measured: the deferred imports").

`install()` puts a finder first on `sys.meta_path` that answers an import of
one of `DEFERRED` (or of a submodule of a package still deferred) with a
module object whose code has not run yet: `import jax` then costs a file
lookup. The first access to an attribute the module does not have yet runs
its real code in that same module object (its deferred parents first), so
every reference anybody took keeps working and sees the real module. This is
`importlib.util.LazyLoader`'s idea with two differences that the stack needs:

- `__path__`, `__spec__` and the other import attributes are set without
  running the module, so `from sklearn import preprocessing` (which asks the
  package for `__path__` and then for `preprocessing`) imports the submodule
  deferred instead of running scikit-learn.
- `PLACEHOLDERS` are callables that stand for a module's function until it is
  called: TensorFlow Lite keeps `from jax import xla_computation` in a
  variable at import time and calls it only to convert a jax function.

Third-party files are not changed. `TFF_DP_EAGER_IMPORTS=1` turns the finder
off, `TFF_DP_EAGER_IMPORTS=h5py,jax` defers the others only (the benchmark's
A/B: `benchmarks.startup`'s `cache_eager` and `cache_eager_h5py` variants).
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
import types
from typing import Callable, Optional, Sequence

# Deferred modules by exact name; their submodules are deferred while the
# package itself still is. `tensorflow_federated.python.core.environments.jax`
# is `tff.jax`: it subclasses a jax class at import, so jax itself cannot
# stay deferred behind it.
DEFERRED = (
    'jax',
    'sklearn',
    'tensorflow_probability',
    'tensorflow_federated.python.core.environments.jax',
    'h5py',
)

# Module -> names of its functions that a dependency binds at import time
# (`from jax import xla_computation`): a forwarding callable stands for each.
PLACEHOLDERS = {'jax': ('xla_computation',)}

ENV_DISABLE = 'TFF_DP_EAGER_IMPORTS'

# One materialization at a time: a module's real code may import another
# deferred module, hence reentrant.
_LOCK = threading.RLock()


class DeferredModule(types.ModuleType):
  """A module whose code runs on the first access to a missing attribute."""

  def __getattr__(self, name: str):
    if name == '__path__':
      # Set at creation for a package (`module_from_spec`): a plain module
      # has none, deferred or not.
      raise AttributeError(name)
    submodule = _submodule_spec(self, name)
    if submodule is not None:
      # `from package import submodule`: stays deferred.
      return importlib.import_module(f'{self.__name__}.{name}')
    materialize(self)
    return getattr(self, name)


def is_deferred(module: types.ModuleType) -> bool:
  """Whether `module`'s code has not run yet."""
  return isinstance(module, DeferredModule)


def _submodule_spec(module: types.ModuleType,
                    name: str) -> Optional[importlib.machinery.ModuleSpec]:
  path = vars(module).get('__path__')
  if path is None:
    return None
  fullname = f'{module.__name__}.{name}'
  if fullname in sys.modules:
    return sys.modules[fullname].__spec__
  return importlib.machinery.PathFinder.find_spec(fullname, path)


def materialize(module: types.ModuleType) -> types.ModuleType:
  """Runs a deferred module's real code in place (parents first)."""
  with _LOCK:
    if not is_deferred(module):
      return module
    parent_name = module.__name__.rpartition('.')[0]
    parent = sys.modules.get(parent_name)
    if parent is not None and is_deferred(parent):
      materialize(parent)
      if not is_deferred(module):  # The parent's code imported it.
        return module
    real_loader = module.__spec__.loader_state
    module.__class__ = types.ModuleType
    module.__spec__.loader = real_loader
    module.__loader__ = real_loader
    real_loader.exec_module(module)
    return module


class _DeferringLoader(importlib.abc.Loader):
  """Creates the module as the real loader would, runs none of its code."""

  def __init__(self, names: Sequence[str]):
    self._placeholders = names

  def create_module(self, spec):
    return None  # The default: a plain module with the spec's attributes.

  def exec_module(self, module: types.ModuleType) -> None:
    module.__class__ = DeferredModule
    for name in self._placeholders:
      setattr(module, name, _placeholder(module, name))


def _placeholder(module: types.ModuleType, name: str) -> Callable[..., object]:

  def forward(*args, **kwargs):
    return getattr(materialize(module), name)(*args, **kwargs)

  forward.__name__ = name
  forward.__qualname__ = name
  forward.__doc__ = f'Runs `{module.__name__}.{name}` (imported on first call).'
  return forward


class DeferringFinder(importlib.abc.MetaPathFinder):
  """Finds `names` (and submodules of packages still deferred) and defers
  them; leaves every other import to the finders after it."""

  def __init__(self,
               names: Sequence[str] = DEFERRED,
               placeholders: Optional[dict[str, Sequence[str]]] = None):
    self._names = frozenset(names)
    self._placeholders = PLACEHOLDERS if placeholders is None else placeholders

  def find_spec(self, fullname, path, target=None):
    del target
    parent_name = fullname.rpartition('.')[0]
    parent = sys.modules.get(parent_name) if parent_name else None
    if fullname not in self._names and not (parent is not None and
                                            is_deferred(parent)):
      return None
    spec = _real_spec(fullname, path)
    if spec is None or spec.loader is None or not hasattr(
        spec.loader, 'exec_module'):
      return None  # Missing or unusual: the normal import reports it.
    real_loader = spec.loader
    spec.loader = _DeferringLoader(self._placeholders.get(fullname, ()))
    spec.loader_state = real_loader
    return spec


def _real_spec(fullname: str, path) -> Optional[importlib.machinery.ModuleSpec]:
  for finder in sys.meta_path:
    if isinstance(finder, DeferringFinder):
      continue
    find_spec = getattr(finder, 'find_spec', None)
    if find_spec is None:
      continue
    spec = find_spec(fullname, path)
    if spec is not None:
      return spec
  return None


def install() -> bool:
  """Puts `DeferringFinder` first on `sys.meta_path` (once); returns whether
  it is installed. Call before TensorFlow is imported: a module already
  imported stays as it is. `TFF_DP_EAGER_IMPORTS=1` leaves imports alone;
  a comma-separated list of `DEFERRED` names imports those as usual."""
  eager = os.environ.get(ENV_DISABLE, '')
  if eager in ('', '0'):
    names = DEFERRED
  elif eager == '1':
    return False
  else:
    names = tuple(n for n in DEFERRED if n not in eager.split(','))
  if not any(isinstance(f, DeferringFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, DeferringFinder(names))
  return True


def uninstall() -> None:
  """Removes the finder (modules already deferred stay deferred)."""
  sys.meta_path[:] = [
      f for f in sys.meta_path if not isinstance(f, DeferringFinder)
  ]


def loaded(name: str) -> bool:
  """Whether module `name` has run its real code in this process."""
  module = sys.modules.get(name)
  return module is not None and not is_deferred(module)

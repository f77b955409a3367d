"""The Python containers of a TFF type, as JSON, and back (for `computation_cache`).

A serialized TFF type (`type_serialization.serialize_type`) keeps names,
dtypes and shapes but not the Python classes of its structs
(`ModelWeights`, `LearningAlgorithmState`, TF Privacy's query states), on
which a `LearningProcess` and its callers rely. `containers` records them
as 'module:qualname' in a JSON tree that mirrors the type; `with_containers`
puts them back on the deserialized type. Only classes of an allowed module
are looked up (the cache is private to the user, but nothing it names is
imported from elsewhere); a namedtuple class made per call
(dp_accounting's `DpEvent.to_named_tuple`) is made again from its fields.
"""

import collections
import contextlib
import importlib
import sys
from typing import Any, Optional

import tensorflow_federated as tff
from tensorflow_federated.python.common_libs import structure

_NAMEDTUPLE = 'namedtuple'
# Modules whose classes an entry may name as Python containers of a type.
_CONTAINER_MODULES = frozenset({'builtins', 'collections'})
_CONTAINER_PACKAGES = ('tensorflow_federated.', 'tensorflow_privacy.',
                       'dp_accounting.', 'tff_dp.')


def _container_name(container) -> Optional[str]:
  """'module:qualname' by which `_container` finds `container` again."""
  if container is None:
    return None
  module = sys.modules[container.__module__]
  candidates = [container.__qualname__]
  # A namedtuple made in a class body (TF Privacy's query states) has a
  # qualname its module cannot resolve: name it through its class.
  candidates += [
      f'{owner.__qualname__}.{container.__name__}'
      for owner in vars(module).values()
      if isinstance(owner, type) and
      vars(owner).get(container.__name__) is container
  ]
  for qualname in candidates:
    name = f'{container.__module__}:{qualname}'
    with contextlib.suppress(AttributeError, ValueError):
      if _container(name) is container:
        return name
  if issubclass(container, tuple) and hasattr(container, '_fields'):
    # A namedtuple class made per call (dp_accounting's DpEvent.
    # to_named_tuple): its readers use its fields, not its class.
    return f'{_NAMEDTUPLE}:{container.__name__}'
  raise ValueError(f'cannot name the container {container!r}')


def _container(name: Optional[str], fields=()):
  """The class `_container_name` named, from an allowed module only
  (a new namedtuple of `fields` for one made per call)."""
  if name is None:
    return None
  module_name, qualname = name.split(':')
  if module_name == _NAMEDTUPLE:
    return collections.namedtuple(qualname, fields)
  if not (module_name in _CONTAINER_MODULES or
          module_name.startswith(_CONTAINER_PACKAGES)):
    raise ValueError(f'container {name!r} is not from an allowed module')
  value = importlib.import_module(module_name)
  for part in qualname.split('.'):
    value = getattr(value, part)
  if not isinstance(value, type):
    raise ValueError(f'container {name!r} is not a class')
  return value


def containers(type_spec) -> Any:
  """The Python containers of `type_spec`'s structs, as JSON.

  A serialized TFF type keeps names and shapes but not the Python classes
  (`ModelWeights`, `LearningAlgorithmState`, TF Privacy's states), which
  the process's callers and `LearningProcess` itself rely on.
  """
  types = tff.types
  if isinstance(type_spec, types.StructType):
    return {
        'c': _container_name(type_spec.python_container),
        'e': [containers(v) for v in type_spec.children()]
    }
  if isinstance(type_spec, types.FederatedType):
    return {'m': containers(type_spec.member)}
  if isinstance(type_spec, types.SequenceType):
    return {'s': containers(type_spec.element)}
  if isinstance(type_spec, types.FunctionType):
    return {
        'p': containers(type_spec.parameter),
        'r': containers(type_spec.result)
    }
  return None


def with_containers(type_spec, tree):
  """`type_spec` (deserialized) with the containers `containers` recorded."""
  types = tff.types
  if tree is None:
    return type_spec
  if isinstance(type_spec, types.StructType):
    elements = [(name, with_containers(value, sub)) for (name, value), sub in
                zip(structure.iter_elements(type_spec), tree['e'], strict=True)]
    container = _container(tree['c'], [name for name, _ in elements])
    if container is None:
      return types.StructType(elements)
    return types.StructWithPythonType(elements, container)
  if isinstance(type_spec, types.FederatedType):
    return types.FederatedType(with_containers(type_spec.member, tree['m']),
                               type_spec.placement, type_spec.all_equal)
  if isinstance(type_spec, types.SequenceType):
    return types.SequenceType(with_containers(type_spec.element, tree['s']))
  if isinstance(type_spec, types.FunctionType):
    return types.FunctionType(with_containers(type_spec.parameter, tree['p']),
                              with_containers(type_spec.result, tree['r']))
  raise ValueError(f'unexpected type {type_spec} for containers {tree}')

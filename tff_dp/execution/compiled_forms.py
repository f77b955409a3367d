"""Computations compiled for the native runtime ahead of their first call.

TFF's execution context compiles each computation on its first call
(`tff.backends.native.desugar_and_transform_to_native`: intrinsics replaced,
the call-dominant form, and Grappler run over every TensorFlow graph on the
driver). On W1's DP-FedAvg that took 0.28 s for `next` and 0.09 s for
`initialize` of a 0.4 s first round after a computation-cache hit (issue
21; benchmarks/README.md, "Start-up and memory"). The computation cache
(`tff_dp.program.computation_cache`) stores the compiled form and hands it
over with `register`; `compile`, the context's compiler function, returns it
for that exact computation object and compiles every other one as TFF does.

The graphs hold the run's secret noise keys, and Grappler's constant folding
copies pieces of them (each 64-bit half) into new constants, so the compiled
form of a run's own computation cannot be stored. `portable_native` compiles
the computation twice, with two sets of public keys (and client-file
directories) in their place, and keeps the first only if replacing its
public values (whole keys, halves, directory) by the second's yields the
second byte for byte: then every constant Grappler derived from a key is one
that `native_from` replaces with the run's fresh key. Anything else (a key
folded into some other value) makes the two differ, and nothing is stored.
TFF's per-graph cache ids (a hash of each graph) are recomputed after the
keys are put in.
"""

import hashlib
import struct
import threading
from typing import Any, Callable, Optional
import weakref

from google.protobuf import any_pb2
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.core.framework import tensor_pb2
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl

# id(computation) -> (weak reference to it, its compiled form). By identity:
# a computation's hash serializes its whole proto.
_PRECOMPILED: dict[int, tuple[weakref.ref, Any]] = {}
_LOCK = threading.Lock()
# Public stand-ins while compiling: variant -> directory; keys: `_public_key`.
_DIRS = {'a': b'/tff-dp-public-dir-a', 'b': b'/tff-dp-public-dir-b'}


def register(computation, native) -> None:
  """`compile(computation)` returns `native` while `computation` lives."""
  key = id(computation)

  def forget(_):
    with _LOCK:
      _PRECOMPILED.pop(key, None)

  with _LOCK:
    _PRECOMPILED[key] = (weakref.ref(computation, forget), native)


def precompiled(computation):
  """The registered compiled form of `computation`, or None."""
  with _LOCK:
    entry = _PRECOMPILED.get(id(computation))
  if entry is None or entry[0]() is not computation:
    return None
  return entry[1]


def compile(computation):  # pylint: disable=redefined-builtin
  """The execution context's compiler: the registered form, else TFF's."""
  native = precompiled(computation)
  if native is not None:
    return native
  return tff.backends.native.desugar_and_transform_to_native(computation)


def walk_tensors(message, visit: Callable[[Any], bool]) -> bool:
  """Calls `visit` on every TensorProto in `message`, GraphDefs packed in
  `Any` fields included; returns whether any visit changed something."""
  if isinstance(message, tensor_pb2.TensorProto):
    return visit(message)
  if isinstance(message, any_pb2.Any):
    if not message.Is(graph_pb2.GraphDef.DESCRIPTOR):
      return False
    graph = graph_pb2.GraphDef()
    message.Unpack(graph)
    changed = walk_tensors(graph, visit)
    if changed:
      message.value = graph.SerializeToString()
    return changed
  changed = False
  for item in _submessages(message):
    changed = walk_tensors(item, visit) or changed
  return changed


def _submessages(message):
  for field, value in message.ListFields():
    if field.type != field.TYPE_MESSAGE:
      continue
    if field.message_type.GetOptions().map_entry:
      values = value.values()
    elif field.label == field.LABEL_REPEATED:
      values = value
    else:
      values = (value,)
    for item in values:
      # A map's values can be scalars.
      if not isinstance(item, (int, float, str, bytes)):
        yield item


def _public_key(variant: str, index: int) -> bytes:
  return hashlib.sha256(
      f'tff-dp public noise key {variant}{index}'.encode()).digest()[:16]


def with_halves(keys: dict[bytes, bytes]) -> dict[bytes, bytes]:
  """`keys` (16 bytes each) and each key's two 8-byte halves, which Grappler
  folds into constants of their own."""
  values = dict(keys)
  for old, new in keys.items():
    values.update({old[:8]: new[:8], old[8:]: new[8:]})
  return values


def substitute(proto, values: dict[bytes, bytes], old_dir: bytes,
               new_dir: bytes) -> None:
  """Replaces, in place, each int64 constant whose bytes are a key of
  `values` (as `tensor_content`, or as one or two `int64_val`) by its value,
  and `old_dir` (if not empty) in string constants by `new_dir`."""

  def visit(tensor) -> bool:
    if tensor.dtype == tf.int64.as_datatype_enum:
      if tensor.tensor_content in values:
        tensor.tensor_content = values[tensor.tensor_content]
        return True
      if len(tensor.int64_val) not in (1, 2):
        return False
      packed = struct.pack(f'<{len(tensor.int64_val)}q', *tensor.int64_val)
      if packed in values:
        new = values[packed]
        tensor.int64_val[:] = struct.unpack(f'<{len(new) // 8}q', new)
        return True
    elif tensor.dtype == tf.string.as_datatype_enum and old_dir:
      changed = False
      for i, value in enumerate(tensor.string_val):
        if old_dir in value:
          tensor.string_val[i] = value.replace(old_dir, new_dir)
          changed = True
      return changed
    return False

  walk_tensors(proto, visit)


def _set_cache_ids(message, *, zero: bool = False) -> None:
  """Each TensorFlow computation's cache id: a hash of its type and graph
  (TFF's `transform_tf_add_ids` hashes the same), or 0."""
  if isinstance(message, computation_pb2.Computation) and message.WhichOneof(
      'computation') == 'tensorflow':
    tf_proto = message.tensorflow
    digest = hashlib.blake2b(
        message.type.SerializeToString(deterministic=True) +
        tf_proto.graph_def.value,
        digest_size=8).digest()
    tf_proto.cache_key.id = 0 if zero else int.from_bytes(digest, 'little')
    return
  if isinstance(message, any_pb2.Any):
    return
  for item in _submessages(message):
    _set_cache_ids(item, zero=zero)


def _canonical(proto) -> bytes:
  """`proto`'s bytes with every graph serialized deterministically (a
  substitution re-serializes a graph with its maps in another order) and
  TFF's variable names (random prefixes, new per compilation) numbered in
  order of appearance."""
  copy = computation_pb2.Computation()
  copy.CopyFrom(proto)
  names = {}

  def rename(name: str) -> str:
    return names.setdefault(name, f'_v{len(names)}')

  def canonical(message):
    if isinstance(message, any_pb2.Any):
      if message.Is(graph_pb2.GraphDef.DESCRIPTOR):
        graph = graph_pb2.GraphDef()
        message.Unpack(graph)
        message.value = graph.SerializeToString(deterministic=True)
      return
    if isinstance(message, computation_pb2.Lambda):
      message.parameter_name = rename(message.parameter_name)
    elif isinstance(message,
                    (computation_pb2.Reference, computation_pb2.Block.Local)):
      message.name = rename(message.name)
    for item in _submessages(message):
      canonical(item)

  canonical(copy)
  return copy.SerializeToString(deterministic=True)


def _native_proto(proto) -> computation_pb2.Computation:
  computation = computation_impl.ConcreteComputation(
      computation_proto=proto, context_stack=context_stack_impl.context_stack)
  native = tff.backends.native.desugar_and_transform_to_native(computation)
  out = computation_pb2.Computation()
  out.CopyFrom(computation_impl.ConcreteComputation.get_proto(native))
  _set_cache_ids(out, zero=True)
  return out


def portable_native(instantiate: Callable[[list[bytes], bytes], Any],
                    num_keys: int) -> Optional[bytes]:
  """The compiled form of a computation with public keys, or None.

  Args:
    instantiate: Returns the computation's proto with the given 16-byte
      keys and client-file directory in place.
    num_keys: How many keys it takes.

  Returns:
    The serialized compiled proto (variant a's public values in it), or
    None when some constant depends on a key in a way `substitute` misses.
  """
  forms = {}
  for variant in _DIRS:
    keys = [_public_key(variant, i) for i in range(num_keys)]
    forms[variant] = (keys, _native_proto(instantiate(keys, _DIRS[variant])))
  (keys_a, form_a), (keys_b, form_b) = forms['a'], forms['b']
  moved = computation_pb2.Computation()
  moved.CopyFrom(form_a)
  substitute(moved, with_halves(dict(zip(keys_a, keys_b))), _DIRS['a'],
             _DIRS['b'])
  if _canonical(moved) != _canonical(form_b):
    return None
  return form_a.SerializeToString(deterministic=True)


def native_from(serialized: bytes, keys: list[bytes], files_dir: bytes):
  """The compiled computation of `portable_native`'s bytes with the run's
  keys and directory in place of the public ones."""
  proto = computation_pb2.Computation.FromString(serialized)
  public = [_public_key('a', i) for i in range(len(keys))]
  substitute(proto, with_halves(dict(zip(public, keys))), _DIRS['a'], files_dir)
  _set_cache_ids(proto)
  return computation_impl.ConcreteComputation(
      computation_proto=proto, context_stack=context_stack_impl.context_stack)

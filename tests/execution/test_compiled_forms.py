"""Compiled forms stored with public keys: the run's keys in every folded constant, or nothing stored.

`compiled_forms.portable_native` compiles a computation for the native runtime
(Grappler folds constants on the driver) with two sets of public keys, and
stores the first only if the run's key can be put into every constant that
depends on it; `native_from` puts it in; `compile` serves the registered form.
"""

import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2
from tensorflow_federated.python.core.impl.computation import computation_impl

from tff_dp.execution import compiled_forms

pytestmark = pytest.mark.tff

_KEY = (0x1234567890abcdef - 2**63, 0x0fedcba987654321)
_BUILT_WITH = (7, 11)  # The key the test computations are traced with.


def _with_key(derive):
  """A computation of x and a key constant (`derive(key, x)`), its proto,
  and `instantiate` for `portable_native`."""

  @tff.tensorflow.computation(np.int64)
  def comp(x):
    key = tf.constant(list(_BUILT_WITH), tf.int64, shape=[2])
    path = tf.constant(b'/built/dir')
    return derive(key, x), tf.strings.join([path, '/shard'])

  proto = computation_impl.ConcreteComputation.get_proto(comp)

  def instantiate(keys, files_dir):
    copy = computation_pb2.Computation()
    copy.CopyFrom(proto)
    compiled_forms.substitute(
        copy,
        compiled_forms.with_halves({struct.pack('<qq', *_BUILT_WITH): keys[0]}),
        b'/built/dir', files_dir)
    return copy

  return instantiate


def _int64_constants(proto, *, scalars_only: bool = False) -> set[int]:
  found = set()

  def visit(tensor):
    if tensor.dtype == tf.int64.as_datatype_enum:
      value = tf.make_ndarray(tensor)
      if not (scalars_only and value.shape):
        found.update(value.reshape(-1).tolist())
    return False

  compiled_forms.walk_tensors(proto, visit)
  return found


def test_folded_halves_take_the_runs_key():
  # key[0] and key[1] alone fold into two scalar constants.
  instantiate = _with_key(lambda key, x: x + key[0] - key[1])

  stored = compiled_forms.portable_native(instantiate, 1)

  assert stored is not None
  native = compiled_forms.native_from(stored, [struct.pack('<qq', *_KEY)],
                                      b'/run/dir')
  proto = computation_impl.ConcreteComputation.get_proto(native)
  constants = _int64_constants(proto)
  # Folded: each half is a scalar constant of its own, and it is the run's.
  assert set(_KEY) <= _int64_constants(proto, scalars_only=True)
  public = struct.unpack('<qq', compiled_forms._public_key('a', 0))  # pylint: disable=protected-access
  assert not set(public) & constants and not set(_BUILT_WITH) & constants
  serialized = proto.SerializeToString()
  assert b'/run/dir' in serialized and b'tff-dp-public-dir' not in serialized


def test_a_key_folded_into_another_value_is_not_stored():
  # Grappler folds key[0] * 3 into one constant that `substitute` cannot
  # recognise: storing it would keep the public key's product.
  instantiate = _with_key(lambda key, x: x + key[0] * 3 + key[1])

  assert compiled_forms.portable_native(instantiate, 1) is None


def test_compile_serves_the_registered_form_of_that_object_only(monkeypatch):
  compiled = []
  monkeypatch.setattr(tff.backends.native, 'desugar_and_transform_to_native',
                      lambda c: compiled.append(c) or 'compiled by TFF')

  class Comp:
    pass

  mine, other = Comp(), Comp()
  compiled_forms.register(mine, 'stored')

  assert compiled_forms.compile(mine) == 'stored'
  assert compiled_forms.compile(other) == 'compiled by TFF'
  assert compiled == [other]
  del mine  # Forgotten with its computation.
  assert not [
      v for v in compiled_forms._PRECOMPILED.values()  # pylint: disable=protected-access
      if v[1] == 'stored'
  ]

"""The computation cache: secrets out of its entries, bad entries rebuilt, hits exact.

And which grouped processes unroll their local steps (`assembly._unroll_bound`):
not the MLP's or logistic regression's, which hold no client size and can
be cached.
"""

import collections
import dataclasses
import json
import os
import struct

from absl import flags
import dp_accounting
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2
from tensorflow_federated.python.core.impl.types import type_serialization
import tensorflow_privacy as tfp

from tests.helpers import REPO_ROOT
from tff_dp.algorithms import grouped_data
from tff_dp.cli import cli_flags
from tff_dp.config import ModelKind
from tff_dp.execution import compiled_forms
from tff_dp.program import assembly
from tff_dp.program import computation_cache
from tff_dp.program import prepare
from tff_dp.program import run_privacy
from tff_dp.program import type_containers

_SMOKE = os.path.join(REPO_ROOT, 'configs', 'smoke.cfg')
_KEY = (0x1234567890abcdef - 2**63, 0x0fedcba987654321)


def test_containers_survive_serialization():
  types, f32 = tff.types, tff.TensorType(np.float32)
  event = type(dp_accounting.GaussianDpEvent(1.0).to_named_tuple())
  query = type(tfp.GaussianSumQuery(1.0, 1.0).initial_global_state())
  member = types.StructWithPythonType([
      ('weights',
       types.StructWithPythonType([
           ('trainable', types.StructWithPythonType([f32], list)),
           ('non_trainable', types.StructWithPythonType([], list))
       ], tff.learning.models.ModelWeights)),
      ('event',
       types.StructWithPythonType([(n, f32) for n in event._fields], event)),
      ('query',
       types.StructWithPythonType([(n, f32) for n in query._fields], query)),
  ], collections.OrderedDict)
  original = types.FunctionType(None, types.FederatedType(member, tff.SERVER))
  bare = type_serialization.deserialize_type(
      type_serialization.serialize_type(original))
  assert bare.result.member.python_container is None  # What is lost.

  restored = type_containers.with_containers(
      bare, json.loads(json.dumps(type_containers.containers(original))))

  member = restored.result.member
  assert member.python_container is collections.OrderedDict
  assert member.weights.python_container is (tff.learning.models.ModelWeights)
  assert member.query.python_container is query
  # dp_accounting makes a new namedtuple class per call: same name, fields.
  assert member.event.python_container.__name__ == event.__name__
  assert member.event.python_container._fields == event._fields
  assert restored.is_equivalent_to(original)


def test_containers_only_from_allowed_modules():
  with pytest.raises(ValueError, match='not from an allowed module'):
    type_containers._container('os:system')


def _computation_with(key, files_dir: str) -> computation_pb2.Computation:
  graph = tf.compat.v1.GraphDef()
  for name, value in (('key', tf.constant(list(key), tf.int64)),
                      ('path', tf.constant(files_dir + '/x'))):
    node = graph.node.add(name=name, op='Const')
    node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value))
  proto = computation_pb2.Computation()
  proto.tensorflow.graph_def.Pack(graph)
  return proto


def _constants(proto):
  graph = tf.compat.v1.GraphDef()
  proto.tensorflow.graph_def.Unpack(graph)
  values = {n.name: tf.make_ndarray(n.attr['value'].tensor) for n in graph.node}
  return tuple(values['key']), values['path']


def test_keys_and_files_dir_replaced_both_ways():
  proto = _computation_with(_KEY, '/tmp/private-dir')
  assert computation_cache._leaks(proto.SerializeToString(), [_KEY],
                                  b'/tmp/private-dir')
  placeholder = b'tff-dp-noisekey0'

  compiled_forms.substitute(proto,
                            {computation_cache._key_bytes(_KEY): placeholder},
                            b'/tmp/private-dir', b'{dir}')

  assert not computation_cache._leaks(proto.SerializeToString(), [_KEY],
                                      b'/tmp/private-dir')
  assert _constants(proto)[1] == b'{dir}/x'
  fresh = (5, -6)
  compiled_forms.substitute(proto,
                            {placeholder: computation_cache._key_bytes(fresh)},
                            b'{dir}', b'/tmp/other')
  assert _constants(proto) == (fresh, b'/tmp/other/x')


def test_leaks_finds_a_key_half_as_a_varint():
  varint = computation_cache._varint(_KEY[1])
  assert computation_cache._leaks(b'xx' + varint + b'yy', [_KEY], b'')
  assert not computation_cache._leaks(b'xx' * 100, [_KEY], b'')


def test_a_corrupt_entry_is_ignored_and_rebuilt(tmp_path, capsys):
  directory = tmp_path / 'cache'
  directory.mkdir(mode=0o700)
  (directory / 'k.json').write_text('{"format": 1, "noise_keys": ')
  built = []

  result = computation_cache.cached_process(str(directory), 'k',
                                            lambda: built.append(1) or 'new')

  assert result == 'new' and built == [1]
  err = capsys.readouterr().err
  assert 'ignored' in err and 'rebuilding' in err and 'Traceback' not in err


def test_a_directory_others_can_write_is_not_used(tmp_path, capsys):
  directory = tmp_path / 'shared'
  directory.mkdir()
  directory.chmod(0o777)

  result = computation_cache.cached_process(str(directory), 'k', lambda: 'p')

  assert result == 'p' and os.listdir(directory) == []
  assert 'writable by other users' in capsys.readouterr().err


def _prepared(*argv):
  fv = flags.FlagValues()
  cli_flags.define_train_flags(fv)
  fv([
      'x', f'--flagfile={_SMOKE}', '--model=mlp', '--hidden_units=4',
      '--dp_mechanism=gaussian_fixed', '--noise_multiplier=0',
      '--allow_zero_noise', '--clip=1.0', '--client_sampling=full',
      '--clients_per_round=40', *argv
  ])
  return prepare.prepare_run(cli_flags.config_from_flags(fv))


def _built(prepared, cache_dir, files_dir, calls):
  sampler = run_privacy.build_sampler(prepared.config,
                                      prepared.data.population,
                                      secret=0)
  return assembly.build_process(prepared.config,
                                prepared.data,
                                sampler,
                                group_size=prepared.clients_per_call,
                                client_files_dir=files_dir,
                                cache_dir=cache_dir)


@pytest.mark.tff
@pytest.mark.slow
def test_a_cached_process_trains_as_a_fresh_one(tmp_path, monkeypatch,
                                                tff_runtime):
  del tff_runtime
  calls = []
  build = assembly._build_process
  monkeypatch.setattr(assembly, '_build_process',
                      lambda *a, **k: calls.append(1) or build(*a, **k))
  cache_dir = str(tmp_path / 'cache')
  prepared = _prepared()
  assert computation_cache.cacheable(prepared.config,
                                     group_size=prepared.clients_per_call,
                                     canaries=None,
                                     keras_model_fn=None)
  data = prepared.data
  rounds = grouped_data.GroupedRounds(data.client_x,
                                      data.client_y,
                                      seed=0,
                                      epochs=1,
                                      group_size=prepared.clients_per_call)
  try:
    with computation_cache.recording_noise_keys() as keys:
      fresh = _built(prepared, cache_dir, rounds.files_dir, calls)
    [entry] = os.listdir(cache_dir)
    with open(os.path.join(cache_dir, entry), 'rb') as f:
      written = f.read()
    # The entry is base64: decode its protos before looking for secrets.
    protos = b''.join(
        computation_cache.base64.b64decode(c['proto'])
        for c in json.loads(written)['computations'].values())
    assert keys and not computation_cache._leaks(protos, keys,
                                                 rounds.files_dir.encode())

    with computation_cache.recording_noise_keys() as run_keys:
      cached = _built(prepared, cache_dir, rounds.files_dir, calls)
    assert calls == [1]  # A hit: nothing traced.
    # Stored compiled from public keys; served with this run's fresh keys.
    natives = json.loads(written)['native']
    assert sorted(natives) == sorted(computation_cache.NATIVE)
    assert not computation_cache._leaks(
        b''.join(
            computation_cache.base64.b64decode(n) for n in natives.values()),
        keys + run_keys, rounds.files_dir.encode())
    for name in computation_cache.NATIVE:
      native = compiled_forms.precompiled(getattr(cached, name))
      served = tff.framework.ConcreteComputation.get_proto(
          native).SerializeToString()
      assert computation_cache._leaks(served, run_keys, b'')
      # Neither the writer's keys nor the public ones it was compiled with.
      public = [
          struct.unpack('<qq', compiled_forms._public_key('a', i))
          for i in range(len(run_keys))
      ]
      assert not computation_cache._leaks(served, keys + public, b'')

    # A hit compiled by TFF at the first call, as before the forms were
    # stored: the reference for the stored forms (both other processes).
    monkeypatch.setenv(computation_cache.ENV_NO_NATIVE, '1')
    compiled_by_tff = _built(prepared, cache_dir, rounds.files_dir, calls)
    monkeypatch.delenv(computation_cache.ENV_NO_NATIVE)
    assert compiled_forms.precompiled(compiled_by_tff.next) is None
    assert compiled_forms.precompiled(fresh.next) is not None

    cohort = np.arange(data.population)
    weights = []
    for process in (compiled_by_tff, fresh, cached):
      state = process.initialize()
      for r in (1, 2):
        state = process.next(state, rounds(r, cohort)).state
      weights.append(process.get_model_weights(state).trainable)
    for reference, other in ((weights[0], weights[1]), (weights[0],
                                                        weights[2])):
      for a, b in zip(reference, other, strict=True):
        np.testing.assert_array_equal(a, b)

    _built(_prepared('--client_learning_rate=0.05'), cache_dir,
           rounds.files_dir, calls)
    assert calls == [1, 1] and len(os.listdir(cache_dir)) == 2
  finally:
    rounds.close()


class _Sizes:

  def client_sizes(self):
    return [3, 64, 17]


def test_the_mlp_takes_the_while_loop_the_cnn_unrolls():
  config = _prepared().config
  assert assembly._unroll_bound(config, _Sizes()) is None
  cnn = dataclasses.replace(config, model=ModelKind.CNN)
  assert assembly._unroll_bound(cnn, _Sizes()) == 64

"""Reusing a learning process's traced TFF computations across runs (issue 21).

Building the grouped DP-FedAvg process traces its four computations
(initialize, next, get/set model weights): several seconds of AutoGraph and
tf.function tracing before the first round. Their serialized protos
(`computation_pb2.Computation`, TFF's `ConcreteComputation.get_proto`) do
not change between runs of the same configuration, so the first run writes
them to a cache entry and later runs reassemble the
`tff.learning.templates.LearningProcess` from the entry in a fraction of a
second.

The entry is keyed by the SHA-256 of everything the computations depend on:
the run's configuration (every setting but the run's name, output
directory and number of rounds), the data's public schema (input size,
classes, image shape, vocabulary, label kind), the number of clients per
call, and the versions: a hash of tff-dp's own source files, Python,
TensorFlow, TFF, TF Privacy, dp-accounting and numpy. Anything else is a
miss: the process is built as without a cache and its entry written.

What an entry holds, and what it must not:

* The graphs embed the 128-bit noise keys (`tff_dp.mechanisms.noise_seeds`)
  as constants. They are replaced by public placeholders before the entry is
  written, and by fresh keys from the operating system when it is read, one
  per placeholder (so keys shared between computations stay shared); the
  entry is written only if no byte pattern of a key remains in it.
* The grouped path's client-file directory (a private temporary directory
  per run) is replaced by a placeholder, and by the run's directory on load.
* Only processes whose graphs take nothing from the client data are cached
  (`cacheable`): the grouped path with the while loop (no client size in
  the graph: `tff_dp.program.assembly`) of the MLP or logistic regression
  with every parameter trained (no frozen or pretrained constants), the
  Gaussian central mechanisms,
  no local or example-level DP, no DP-FTRL tree, no audit canaries, no
  caller's model. Model weights at initialization come from the public
  --seed.

An entry also holds `initialize`'s and `next`'s compiled forms (TFF's
first-call compile: ~0.37 s of W1's round 1), compiled from public keys and
used with the run's (`tff_dp.execution.compiled_forms`);
`TFF_DP_NO_NATIVE_CACHE=1` leaves them unused (the benchmark's A/B).

So an entry holds the model architecture, the run's hyperparameters and the
data schema, as flags.txt does; no client data, no statistic of it, no
secret. The directory is made 0700 and used only when it is a directory of
ours that no other user can write to: an entry's graphs run on our worker.
A corrupt, mismatched or unreadable entry is ignored (one line on stderr)
and rebuilt.
"""

import base64
import contextlib
import hashlib
import json
import os
import stat
import struct
import sys
from typing import Any, Callable, Iterator, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.proto.v0 import computation_pb2
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.core.impl.context_stack import context_stack_impl
from tensorflow_federated.python.core.impl.types import type_serialization

from tff_dp import atomic_io
from tff_dp.config import Algorithm
from tff_dp.config import DpMechanism
from tff_dp.config import LocalDp
from tff_dp.config import ModelKind
from tff_dp.config import Trainable
from tff_dp.config import TrainConfig
from tff_dp.execution import compiled_forms
from tff_dp.privacy import run_secrets
from tff_dp.program import type_containers

FORMAT = 1
# Entries kept (the most recently used); older ones are removed.
MAX_ENTRIES = 32
COMPUTATIONS = ('initialize', 'next', 'get_model_weights', 'set_model_weights')
# Stored compiled too: the first round's (the others compile in ms).
NATIVE = ('initialize', 'next')
# Set (not '0'): the stored compiled forms are not used (the benchmark's A/B).
ENV_NO_NATIVE = 'TFF_DP_NO_NATIVE_CACHE'
# Settings that do not change the computations (a change is not a miss).
_UNKEYED = frozenset({'run_name', 'output_dir', 'rounds'})
# 16 public bytes standing in for a 128-bit key; %02d: which key.
_KEY_PLACEHOLDER = 'tff-dp-noisekey%02d'
_FILES_PLACEHOLDER = b'{tff-dp:client-files-dir}'


def cacheable(config: TrainConfig, *, group_size: int, canaries,
              keras_model_fn) -> bool:
  """Whether `config`'s process is one whose graphs were checked to take
  nothing from the client data and no secret but the noise keys."""
  return (group_size > 1 and not config.workers and canaries is None and
          keras_model_fn is None and
          config.model in (ModelKind.MLP, ModelKind.LOGISTIC_REGRESSION) and
          config.trainable is Trainable.ALL and
          config.algorithm is not Algorithm.DP_FTRL and
          config.local_dp is LocalDp.NONE and not config.example_dp and
          config.dp_mechanism in (DpMechanism.GAUSSIAN_FIXED,
                                  DpMechanism.GAUSSIAN_ADAPTIVE))


def _source_hash() -> str:
  """SHA-256 of tff-dp's Python sources (a code change is a miss)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  digest = hashlib.sha256()
  for directory, subdirs, files in sorted(os.walk(root)):
    subdirs.sort()
    for name in sorted(f for f in files if f.endswith('.py')):
      path = os.path.join(directory, name)
      digest.update(os.path.relpath(path, root).encode() + b'\0')
      with open(path, 'rb') as f:
        digest.update(f.read())
  return digest.hexdigest()


def versions() -> dict[str, str]:
  """The versions an entry is valid for."""
  import dp_accounting  # pylint: disable=g-import-not-at-top
  import tensorflow_privacy  # pylint: disable=g-import-not-at-top
  return {
      'tff_dp_sources': _source_hash(),
      'python': sys.version,
      'tensorflow': tf.__version__,
      'tensorflow_federated': tff.__version__,
      'tensorflow_privacy': tensorflow_privacy.__version__,
      'dp_accounting': getattr(dp_accounting, '__version__', 'unknown'),
      'numpy': np.__version__,
  }


def cache_key(config: TrainConfig, data, *, group_size: int) -> str:
  """The hex SHA-256 naming `config`'s entry (see the module docstring)."""
  settings = {k: v for k, v in config.to_json().items() if k not in _UNKEYED}
  schema = {
      'input_dim': data.input_dim,
      'num_classes': data.num_classes,
      'image_shape': data.image_shape and list(data.image_shape),
      'vocab_size': data.vocab_size,
      'label_kind': data.label_kind.value,
  }
  material = json.dumps(
      {
          'format': FORMAT,
          'config': settings,
          'schema': schema,
          'group_size': group_size,
          'versions': versions()
      },
      sort_keys=True,
      default=str)
  return hashlib.sha256(material.encode()).hexdigest()


@contextlib.contextmanager
def recording_noise_keys() -> Iterator[list[tuple[int, int]]]:
  """The noise keys drawn (`run_secrets.new_noise_key`) inside the block.

  The mechanisms draw their keys as they are built; the entry's writer must
  know them to take them out.
  """
  keys = []
  draw = run_secrets.new_noise_key

  def recorded() -> tuple[int, int]:
    key = draw()
    keys.append(key)
    return key

  run_secrets.new_noise_key = recorded
  try:
    yield keys
  finally:
    run_secrets.new_noise_key = draw


def _key_bytes(key) -> bytes:
  return struct.pack('<qq', *key)


def _varint(value: int) -> bytes:
  value &= 2**64 - 1
  out = bytearray()
  while True:
    byte, value = value & 0x7f, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


def _leaks(serialized: bytes, keys, files_dir: bytes) -> bool:
  """Whether any half of a key (packed or varint) or the directory remains."""
  for key in keys:
    for half in key:
      varint = _varint(half)
      if (struct.pack('<q', half) in serialized or
          len(varint) >= 6 and varint in serialized):
        return True
  return bool(files_dir) and files_dir in serialized


def _entry(process, keys, files_dir: str) -> Optional[dict[str, Any]]:
  """The JSON entry of `process`, secrets replaced; None if any remains."""
  placeholders = {
      _key_bytes(k): (_KEY_PLACEHOLDER % i).encode() for i, k in enumerate(keys)
  }
  entry = {'format': FORMAT, 'noise_keys': len(keys), 'computations': {}}
  for name in COMPUTATIONS:
    computation = getattr(process, name)
    proto = computation_pb2.Computation()
    proto.CopyFrom(computation_impl.ConcreteComputation.get_proto(computation))
    compiled_forms.substitute(proto, placeholders, files_dir.encode(),
                              _FILES_PLACEHOLDER)
    serialized = proto.SerializeToString()
    if _leaks(serialized, keys, files_dir.encode()):
      return None
    entry['computations'][name] = {
        'proto': base64.b64encode(serialized).decode('ascii'),
        'containers': type_containers.containers(computation.type_signature)
    }
  entry['native'] = _natives(entry)
  return entry


def _natives(entry: dict[str, Any]) -> dict[str, str]:
  """The compiled forms of `NATIVE` that `compiled_forms.portable_native`
  can store (base64), by name."""
  natives = {}
  for name in NATIVE:
    stored = base64.b64decode(entry['computations'][name]['proto'])

    def instantiate(keys, files_dir, stored=stored):
      proto = computation_pb2.Computation.FromString(stored)
      compiled_forms.substitute(proto, {
          (_KEY_PLACEHOLDER % i).encode(): k for i, k in enumerate(keys)
      }, _FILES_PLACEHOLDER, files_dir)
      return proto

    native = compiled_forms.portable_native(instantiate, entry['noise_keys'])
    if native is not None:
      natives[name] = base64.b64encode(native).decode('ascii')
  return natives


def _register_natives(entry: dict[str, Any], computations, keys: list[bytes],
                      files_dir: str) -> None:
  """Hands the entry's compiled forms, with `keys` (16 bytes each, in
  placeholder order), to the execution context (`compiled_forms.register`)."""
  if os.environ.get(ENV_NO_NATIVE, '') not in ('', '0'):
    return
  for name, encoded in entry.get('native', {}).items():
    native = compiled_forms.native_from(
        base64.b64decode(encoded, validate=True), keys, files_dir.encode())
    compiled_forms.register(computations[name], native)


def _process_from(entry: dict[str, Any], files_dir: str):
  """The process of a read entry, with fresh noise keys."""
  if entry.get('format') != FORMAT:
    raise ValueError(f'format {entry.get("format")!r}, not {FORMAT}')
  fresh = {
      (_KEY_PLACEHOLDER % i).encode(): _key_bytes(run_secrets.new_noise_key())
      for i in range(entry['noise_keys'])
  }
  computations = {}
  for name in COMPUTATIONS:
    stored = entry['computations'][name]
    proto = computation_pb2.Computation.FromString(
        base64.b64decode(stored['proto'], validate=True))
    compiled_forms.substitute(proto, fresh, _FILES_PLACEHOLDER,
                              files_dir.encode())
    annotated = type_containers.with_containers(
        type_serialization.deserialize_type(proto.type), stored['containers'])
    computations[name] = computation_impl.ConcreteComputation(
        computation_proto=proto,
        context_stack=context_stack_impl.context_stack,
        annotated_type=annotated)
  _register_natives(
      entry, computations,
      [fresh[(_KEY_PLACEHOLDER % i).encode()] for i in range(len(fresh))],
      files_dir)
  return tff.learning.templates.LearningProcess(
      computations['initialize'], computations['next'],
      computations['get_model_weights'], computations['set_model_weights'])


def _private_dir(path: str) -> Optional[str]:
  """Why `path` may not hold entries (None: it may); makes it 0700."""
  try:
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
  except OSError as e:
    return f'{path}: {e.strerror}'
  if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
    return f'{path} is not a directory of ours'
  if stat.S_IMODE(info.st_mode) & 0o022:
    return f'{path} is writable by other users'
  return None


def _note(message: str) -> None:
  print(f'tff-dp: computation cache: {message}', file=sys.stderr, flush=True)


def cached_process(directory: str,
                   key: str,
                   build: Callable[[], Any],
                   *,
                   files_dir: str = ''):
  """The process of entry `key` under `directory`, or `build()`'s, cached.

  Args:
    directory: The cache directory (made 0700 if missing).
    key: `cache_key` of the run.
    build: Builds the process (a miss); must draw its noise keys with
      `run_secrets.new_noise_key`.
    files_dir: The grouped path's client-file directory of this run.

  Returns:
    The `LearningProcess`.
  """
  refusal = _private_dir(directory)
  if refusal is not None:
    _note(f'not used: {refusal}')
    return build()
  path = os.path.join(directory, f'{key}.json')
  if os.path.exists(path):
    try:
      with open(path, encoding='utf-8') as f:
        if os.fstat(f.fileno()).st_uid != os.geteuid():
          raise ValueError('not written by us')
        process = _process_from(json.load(f), files_dir)
      os.utime(path)  # Recently used: kept by `_prune`.
      return process
    except Exception as e:  # pylint: disable=broad-except
      # Whatever is wrong with it, the run goes on as without a cache.
      _note(f'ignored {path} ({type(e).__name__}: {e}); rebuilding')
  with recording_noise_keys() as keys:
    process = build()
  try:
    entry = _entry(process, keys, files_dir)
    # This run's computations too (their compile is paid): its own keys.
    _register_natives(entry or {}, {n: getattr(process, n) for n in NATIVE},
                      [_key_bytes(k) for k in keys], files_dir)
  except Exception as e:  # pylint: disable=broad-except
    # A failure to cache must not fail the run that just built its process.
    _note(f'not written ({type(e).__name__}: {e})')
    return process
  if entry is None:
    _note('not written: a secret would remain in it')
    return process
  try:
    atomic_io.write_text_atomic(path, json.dumps(entry))
    _prune(directory)
  except OSError as e:
    _note(f'not written: {path}: {e.strerror}')
  return process


def _prune(directory: str) -> None:
  """Keeps the `MAX_ENTRIES` most recently used entries (~1 MB each)."""
  entries = [
      os.path.join(directory, name)
      for name in os.listdir(directory)
      if name.endswith('.json')
  ]
  entries.sort(key=os.path.getmtime, reverse=True)
  for path in entries[MAX_ENTRIES:]:
    with contextlib.suppress(OSError):
      os.remove(path)

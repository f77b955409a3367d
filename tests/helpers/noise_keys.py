"""A recognizable noise key, and whether a TFF computation holds it.

Tests that check where the secret noise keys travel (split rounds, the fused
grouped server step) pin `run_secrets.new_noise_key` to `KEY` and search a
computation's serialized proto for either half, raw or as a varint (the
two ways a TensorProto may hold an int64).
"""

import struct

from tensorflow_federated.python.core.impl.computation import computation_impl

# Signed int64 values whose encodings occur nowhere else.
KEY = (0x5a17c0ffee15900d, 0x31d0beefcafe7a11)


def encodings(value: int) -> list[bytes]:
  """The bytes a TensorProto may hold `value` as: raw, or a varint."""
  raw = struct.pack('<q', value)
  varint, v = b'', value & (2**64 - 1)
  while True:
    byte, v = v & 0x7f, v >> 7
    varint += bytes([byte | (0x80 if v else 0)])
    if not v:
      break
  return [raw, varint]


def holds_key(comp) -> bool:
  """Whether `comp`'s serialized proto holds either half of `KEY`."""
  data = computation_impl.ConcreteComputation.get_proto(
      comp).SerializeToString()
  return any(e in data for value in KEY for e in encodings(value))

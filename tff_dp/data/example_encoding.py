"""Encodes (features, label) rows as serialized tf.train.Example protos.

The wire format of a tf.train.Example is fixed, so the bytes are built here
directly: the importer stays free of TensorFlow (light to import, fast), and
tests parse its output with TensorFlow and TFF.

  Example { Features features = 1; }
  Features { map<string, Feature> feature = 1; }  (entries: key 1, value 2)
  Feature { oneof { BytesList bytes_list = 1; FloatList float_list = 2;
                    Int64List int64_list = 3; } }
  FloatList { repeated float value = 1 [packed]; }  Int64List likewise.
"""

import functools

FEATURES_KEY = 'features'
LABEL_KEY = 'label'


def _varint(value: int) -> bytes:
  out = bytearray()
  while True:
    bits = value & 0x7F
    value >>= 7
    if value:
      out.append(bits | 0x80)
    else:
      out.append(bits)
      return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field (wire type 2)."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@functools.lru_cache(maxsize=4096)
def _label_entry(label: int) -> bytes:
  """The Features map entry 'label' -> int64_list [label]."""
  int64_list = _field(1, _varint(label))
  entry = _field(1, LABEL_KEY.encode()) + _field(2, _field(3, int64_list))
  return _field(1, entry)


class ExampleEncoder:
  """Serializes (float32 features, label) as a tf.train.Example."""

  def __init__(self, input_dim: int):
    data_len = 4 * input_dim
    # Everything before the float bytes has a fixed length for a fixed
    # input_dim, so it is built once.
    float_list_head = _varint(1 << 3 | 2) + _varint(data_len)
    float_list_len = len(float_list_head) + data_len
    feature_head = _varint(2 << 3 | 2) + _varint(float_list_len)
    feature_len = len(feature_head) + float_list_len
    key = _field(1, FEATURES_KEY.encode())
    value_head = _varint(2 << 3 | 2) + _varint(feature_len)
    entry_len = len(key) + len(value_head) + feature_len
    self._prefix = (_varint(1 << 3 | 2) + _varint(entry_len) + key +
                    value_head + feature_head + float_list_head)
    self._features_entry_len = len(self._prefix) + data_len

  def encode(self, x_bytes: bytes, label: int) -> bytes:
    """x_bytes: the row's features as little-endian float32."""
    label_entry = _label_entry(label)
    body_len = self._features_entry_len + len(label_entry)
    return b'\n' + _varint(body_len) + self._prefix + x_bytes + label_entry

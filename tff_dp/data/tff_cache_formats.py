"""How TFF's loaders parse each benchmark's examples, and which are valid.

One `ExampleFormat` per benchmark cache file: TFF's parse spec and element
dtypes (so that tff-dp's elements are those of `tff.simulation.datasets.
<name>.load_data`), and the value ranges `tff_cache` checks of the first
example of each split on load.
"""

import collections
import dataclasses
from typing import Mapping, Optional

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class ExampleFormat:
  """How TFF's loader parses a benchmark's examples, and which are valid.

  Attributes:
    features: TFF's parse spec (key -> FixedLenFeature).
    dtypes: The dtype TFF's element has under each key (it casts to it).
    ranges: key -> [low, high): the integer values allowed (before TFF's
      cast, which would wrap a CIFAR-100 pixel of 256 to 0).
    finite: Float keys whose values must be finite.
  """
  features: Mapping[str, tf.io.FixedLenFeature]
  dtypes: Mapping[str, tf.DType]
  ranges: Mapping[str, tuple[int,
                             int]] = dataclasses.field(default_factory=dict)
  finite: tuple[str, ...] = ()

  def parse(self, serialized: tf.Tensor) -> collections.OrderedDict:
    """One serialized example -> TFF's element (TFF's own parsing)."""
    parsed = tf.io.parse_example(serialized, dict(self.features))
    return collections.OrderedDict((key, tf.cast(parsed[key], self.dtypes[key]))
                                   for key in sorted(self.features))

  def problem(self, serialized: bytes) -> Optional[str]:
    """Why an example is not one of this format, or None (eagerly)."""
    parsed = tf.io.parse_example(serialized, dict(self.features))
    for key, (low, high) in self.ranges.items():
      value = parsed[key].numpy()
      bad = value[(value < low) | (value >= high)]
      if bad.size:
        return f'{key} {bad.flat[0]}, outside {low}..{high - 1}'
    for key in self.finite:
      if not np.isfinite(parsed[key].numpy()).all():
        return f'NaN or infinite {key}'
    return None


def _fixed(shape, dtype) -> tf.io.FixedLenFeature:
  return tf.io.FixedLenFeature(shape=shape, dtype=dtype)


def emnist_format(num_classes: int) -> ExampleFormat:
  """TFF's EMNIST elements: label int32 [], pixels float32 [28, 28]."""
  return ExampleFormat(features={
      'label': _fixed((), tf.int64),
      'pixels': _fixed((28, 28), tf.float32)
  },
                       dtypes={
                           'label': tf.int32,
                           'pixels': tf.float32
                       },
                       ranges={'label': (0, num_classes)},
                       finite=('pixels',))


CIFAR100_FORMAT = ExampleFormat(features={
    'coarse_label': _fixed((), tf.int64),
    'image': _fixed((32, 32, 3), tf.int64),
    'label': _fixed((), tf.int64)
},
                                dtypes={
                                    'coarse_label': tf.int64,
                                    'image': tf.uint8,
                                    'label': tf.int64
                                },
                                ranges={
                                    'coarse_label': (0, 20),
                                    'image': (0, 256),
                                    'label': (0, 100)
                                })
SHAKESPEARE_FORMAT = ExampleFormat(features={'snippets': _fixed((), tf.string)},
                                   dtypes={'snippets': tf.string})
_STACKOVERFLOW_KEYS = ('creation_date', 'tags', 'title', 'tokens', 'type')
STACKOVERFLOW_FORMAT = ExampleFormat(
    features={
        'score': _fixed((), tf.int64),
        **{
            k: _fixed((), tf.string) for k in _STACKOVERFLOW_KEYS
        }
    },
    dtypes={
        'score': tf.int64,
        **{
            k: tf.string for k in _STACKOVERFLOW_KEYS
        }
    })

"""The transformer language model: causality, names, sizes and seeding.

Plain Keras (no TFF): the causal mask is checked exactly (changing a later
token changes no earlier logit, bit for bit), the parameter count against the
architecture's formula.
"""

import numpy as np
import pytest
import tensorflow as tf

from tff_dp import config as config_lib
from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.models import transformer

_SMALL = dict(vocab_size=11,
              sequence_length=9,
              num_layers=2,
              width=8,
              num_heads=2,
              ff_width=12)


def _expected_params(*, vocab_size, sequence_length, num_layers, width,
                     ff_width, **_):
  """The GPT-2 layout's parameter count, from the sizes."""
  embeddings = vocab_size * width + sequence_length * width
  attention = 4 * (width * width + width)
  feed_forward = width * ff_width + ff_width + ff_width * width + width
  layer_norms = 2 * 2 * width
  return (embeddings + num_layers * (attention + feed_forward + layer_norms) +
          2 * width + width * vocab_size)


def _tokens(rng, batch, sizes):
  return rng.integers(0,
                      sizes['vocab_size'],
                      size=(batch, sizes['sequence_length']),
                      dtype=np.int32)


@pytest.mark.parametrize('position', [0, 3, 7])
def test_later_tokens_never_change_earlier_logits(position):
  model = transformer.build_transformer(**_SMALL, seed=3)
  rng = np.random.default_rng(position)
  tokens = _tokens(rng, 4, _SMALL)
  changed = tokens.copy()
  # Change every token after `position` (at least one differs per row).
  changed[:, position +
          1:] = (changed[:, position + 1:] + 1) % _SMALL['vocab_size']
  before = model(tokens).numpy()
  after = model(changed).numpy()
  np.testing.assert_array_equal(before[:, :position + 1],
                                after[:, :position + 1])
  # The test can fail: the next position does see the change.
  assert not np.array_equal(before[:, position + 1:], after[:, position + 1:])


def test_output_is_logits_over_the_vocabulary_at_every_position():
  model = transformer.build_transformer(**_SMALL)
  logits = model(_tokens(np.random.default_rng(0), 3, _SMALL))
  assert logits.shape == (3, _SMALL['sequence_length'], _SMALL['vocab_size'])
  assert logits.dtype == tf.float32


def test_parameter_count_matches_the_architecture():
  model = transformer.build_transformer(**_SMALL)
  assert model.count_params() == _expected_params(**_SMALL)


def test_projections_come_from_the_factory_under_their_names():
  made = []

  def factory(units, *, use_bias, name):
    made.append((name, units, use_bias))
    return tf.keras.layers.Dense(units, use_bias=use_bias, name=name)

  model = transformer.build_transformer(**_SMALL, dense_factory=factory)
  width, ff = _SMALL['width'], _SMALL['ff_width']
  expected = []
  for i in range(_SMALL['num_layers']):
    expected += [(f'block{i}_q', width, True), (f'block{i}_k', width, True),
                 (f'block{i}_v', width, True), (f'block{i}_o', width, True),
                 (f'block{i}_ff1', ff, True), (f'block{i}_ff2', width, True)]
  expected.append(('lm_head', _SMALL['vocab_size'], False))
  assert made == expected
  names = {layer.name for layer in model.layers}
  assert {'token_embedding', 'position_embedding', 'final_ln'} <= names
  assert {f'block{i}_ln{j}' for i in range(2) for j in (1, 2)} <= names
  assert not any(
      isinstance(layer, tf.keras.layers.MultiHeadAttention)
      for layer in model.layers)


def test_initial_weights_follow_the_seed():
  first = transformer.build_transformer(**_SMALL, seed=5).get_weights()
  again = transformer.build_transformer(**_SMALL, seed=5).get_weights()
  other = transformer.build_transformer(**_SMALL, seed=6).get_weights()
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize('sizes,message', [
    (dict(_SMALL, num_heads=3), 'not a multiple'),
    (dict(_SMALL, num_layers=0), 'num_layers must be a positive int'),
])
def test_bad_sizes_are_refused(sizes, message):
  with pytest.raises(ValueError, match=message):
    transformer.build_transformer(**sizes)


def test_default_size_is_a_small_cpu_model():
  # The flags' default model on --dataset=python_stdlib (context 64, 100 ids).
  model = models.build_keras_model(ModelKind.TRANSFORMER,
                                   input_dim=64,
                                   num_classes=100,
                                   vocab_size=100,
                                   hidden_units=1,
                                   seed=0)
  sizes = dict(vocab_size=100,
               sequence_length=64,
               num_layers=config_lib.DEFAULT_TRANSFORMER_LAYERS,
               width=config_lib.DEFAULT_TRANSFORMER_WIDTH,
               ff_width=config_lib.DEFAULT_TRANSFORMER_FF_WIDTH)
  assert model.count_params() == _expected_params(**sizes)
  assert 1_000_000 <= model.count_params() <= 5_000_000

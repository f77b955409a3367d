"""The LoRA dense layer (`tff_dp.models.lora`), eagerly in Keras.

At initialization an adapted layer computes exactly what its base computes
(B = 0); after its adapters move, `merge` folds them into plain Dense kernels
that give the same logits; bad ranks and models without Dense layers are
refused with a message naming them.
"""

import numpy as np
import pytest
import tensorflow as tf

from tff_dp.algorithms import models
from tff_dp.config import ModelKind
from tff_dp.models import lora


def _mlp(seed=3):
  return models.build_keras_model(ModelKind.MLP,
                                  input_dim=6,
                                  num_classes=4,
                                  hidden_units=5,
                                  hidden_layers=2,
                                  seed=seed)


def _inputs():
  return np.random.default_rng(0).normal(size=(7, 6)).astype(np.float32)


def test_adapted_model_starts_equal_to_its_base():
  base = _mlp()
  adapted = lora.add_adapters(_mlp(), rank=2, alpha=4.0, seed=0)
  assert len(lora.adapter_layers(adapted)) == 3
  # Same seeded initializers, B = 0: bit for bit the same logits.
  np.testing.assert_array_equal(
      adapted(_inputs()).numpy(),
      base(_inputs()).numpy())
  for layer, twin in zip(lora.adapter_layers(adapted), base.layers):
    np.testing.assert_array_equal(layer.kernel.numpy(), twin.kernel.numpy())
    assert not np.any(layer.lora_b.numpy())
    assert np.any(layer.lora_a.numpy())


def test_only_adapters_are_trainable_and_ffa_lora_freezes_a():
  adapted = lora.add_adapters(_mlp(), rank=2, alpha=4.0, seed=0)
  names = sorted(w.name.split('/')[-1] for w in adapted.trainable_weights)
  assert names == ['lora_a:0'] * 3 + ['lora_b:0'] * 3
  ffa = lora.add_adapters(_mlp(), rank=2, alpha=4.0, seed=0, freeze_a=True)
  assert sorted(
      w.name.split('/')[-1] for w in ffa.trainable_weights) == ['lora_b:0'] * 3
  # Frozen at creation: TFF's functional model reads this flag.
  assert not any(w.trainable for w in ffa.non_trainable_weights)


def test_merge_gives_the_adapter_models_logits():
  adapted = lora.add_adapters(_mlp(), rank=3, alpha=6.0, seed=1)
  rng = np.random.default_rng(1)
  for layer in lora.adapter_layers(adapted):
    layer.lora_b.assign(rng.normal(size=layer.lora_b.shape))
  merged = lora.merge(adapted)
  assert not lora.adapter_layers(merged)
  assert all(
      type(layer) is tf.keras.layers.Dense  # pylint: disable=unidiomatic-typecheck
      for layer in merged.layers)
  out = adapted(_inputs()).numpy()
  assert np.abs(out - _mlp()(_inputs()).numpy()).max() > 0.1  # B moved it.
  np.testing.assert_allclose(merged(_inputs()).numpy(), out, atol=1e-5)
  layer = lora.adapter_layers(adapted)[0]
  np.testing.assert_allclose(merged.layers[0].kernel.numpy(),
                             layer.kernel.numpy() +
                             2.0 * layer.lora_a.numpy() @ layer.lora_b.numpy(),
                             rtol=1e-6)


def test_dense_factory_layers_have_distinct_seeded_adapters():
  make = lora.dense_factory(4, 8.0, 10)
  first, second = make(3, use_bias=True, name='a'), make(3, name='b')
  assert (first.seed, second.seed) == (10, 11)
  assert first.scale == 2.0 and first.name == 'a'
  x = tf.keras.Input(shape=(5,))
  tf.keras.Model(x, second(first(x)))
  assert not np.array_equal(first.lora_a.numpy()[:3], second.lora_a.numpy())
  again = lora.dense_factory(4, 8.0, 10)(3)
  again.build((None, 5))
  np.testing.assert_array_equal(again.lora_a.numpy(), first.lora_a.numpy())


def test_layer_config_round_trips():
  layer = lora.LoraDense(3,
                         rank=2,
                         alpha=1.5,
                         seed=4,
                         freeze_a=True,
                         activation='relu',
                         name='x')
  clone = lora.LoraDense.from_config(layer.get_config())
  assert (clone.units, clone.rank, clone.alpha, clone.seed, clone.freeze_a,
          clone.name) == (3, 2, 1.5, 4, True, 'x')


@pytest.mark.parametrize('rank,alpha', [(0, 1.0), (-2, 1.0), (1.5, 1.0),
                                        (2, 0.0), (2, float('nan'))])
def test_bad_rank_or_alpha_is_refused(rank, alpha):
  with pytest.raises(ValueError, match='LoRA (rank|alpha)'):
    lora.dense_factory(rank, alpha, 0)


def test_model_without_dense_layers_is_refused():
  x = tf.keras.Input(shape=(4,))
  no_dense = tf.keras.Model(x, tf.keras.layers.Embedding(5, 3)(x))
  with pytest.raises(ValueError, match='has none'):
    lora.add_adapters(no_dense, rank=2, alpha=1.0, seed=0)


def test_transformer_built_with_the_lora_factory_trains_only_adapters():
  from tff_dp.config import Trainable  # pylint: disable=g-import-not-at-top
  from tff_dp.models import trainable  # pylint: disable=g-import-not-at-top
  from tff_dp.models import transformer  # pylint: disable=g-import-not-at-top
  model = transformer.build_transformer(vocab_size=7,
                                        sequence_length=5,
                                        num_layers=1,
                                        width=4,
                                        num_heads=2,
                                        ff_width=6,
                                        dense_factory=lora.dense_factory(
                                            2, 2.0, 0))
  model = trainable.configure(
      model,
      trainable.TrainableSettings(trainable=Trainable.LORA),
      has_adapters=True)
  names = [layer.name for layer in lora.adapter_layers(model)]
  assert names == [
      'block0_q', 'block0_k', 'block0_v', 'block0_o', 'block0_ff1',
      'block0_ff2', 'lm_head'
  ]
  assert len(model.trainable_weights) == 2 * len(names)
  assert all('lora_' in w.name for w in model.trainable_weights)

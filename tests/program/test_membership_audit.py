"""User-level membership inference on a final model (`membership_audit`).

Checks the client losses against Keras' own per-client evaluation, the
attack against a model that memorised its members (exposed) and against
two sets the model never saw (chance), the subsample of members, the
refusals, and how members and non-members are read from the run's data.
The models are Keras ones (TF, no TFF computation): no runtime is needed.
Seeds are fixed, so every assert is deterministic.
"""

import functools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.algorithms import models
from tff_dp.audit import membership
from tff_dp.config import ModelKind
from tff_dp.data import held_out as held_out_lib
from tff_dp.data.federated_data import FederatedData
from tff_dp.data.labels import LabelKind
from tff_dp.program import membership_audit

_INPUT_DIM = 16
_CLASSES = 10


def _keras_model_fn(seed=0, hidden_units=64):
  return functools.partial(models.build_keras_model,
                           ModelKind.MLP,
                           input_dim=_INPUT_DIM,
                           num_classes=_CLASSES,
                           hidden_units=hidden_units,
                           seed=seed)


def _clients(rng, sizes, *, label_kind=LabelKind.SINGLE):
  """(x, y) arrays of clients of these sizes: normal features, random
  labels (class ids, or multi-hot vectors)."""
  clients = []
  for n in sizes:
    x = rng.normal(size=(n, _INPUT_DIM)).astype(np.float32)
    if label_kind is LabelKind.MULTI_HOT:
      y = rng.integers(0, 2, size=(n, _CLASSES)).astype(np.float32)
    else:
      y = rng.integers(0, _CLASSES, size=n).astype(np.int32)
    clients.append((x, y))
  return clients


# --- Client losses -----------------------------------------------------------


@pytest.mark.parametrize('label_kind', [LabelKind.SINGLE, LabelKind.MULTI_HOT])
def test_client_losses_equal_keras_evaluate_on_each_client(label_kind):
  clients = _clients(np.random.default_rng(0), (1, 3, 7, 5),
                     label_kind=label_kind)
  # Weights of another initialization than keras_model_fn's: they must be
  # assigned, or the losses differ.
  trained = _keras_model_fn(seed=5, hidden_units=8)()
  weights = tff.learning.models.ModelWeights.from_model(trained)
  trained.compile(loss=models.loss_fn(label_kind=label_kind))
  want = [
      trained.evaluate(x, y, batch_size=len(x), verbose=0) for x, y in clients
  ]
  losses = functools.partial(membership_audit.client_losses,
                             keras_model_fn=_keras_model_fn(hidden_units=8),
                             label_kind=label_kind)
  datasets = [tf.data.Dataset.from_tensor_slices(c) for c in clients]
  for examples in (clients, datasets):
    # Batches of 4: the client of 7 spans calls, the small ones share one.
    got = losses(weights, datasets=examples, batch_size=4)
    assert got.dtype == np.float64 and got.shape == (4,)
    np.testing.assert_allclose(got, want, rtol=1e-5)
  untrained = tff.learning.models.ModelWeights.from_model(
      _keras_model_fn(hidden_units=8)())
  assert not np.allclose(losses(untrained, datasets=clients), want)


# --- The attack ----------------------------------------------------------------


@pytest.fixture(name='memorised', scope='module')
def fixture_memorised():
  """(weights, members) of an MLP trained to memorise 60 clients' random
  labels (2 examples each)."""
  members = _clients(np.random.default_rng(1), [2] * 60)
  model = _keras_model_fn()()
  model.compile(optimizer=tf.keras.optimizers.Adam(0.03),
                loss=models.loss_fn(label_kind=LabelKind.SINGLE))
  tf.keras.utils.set_random_seed(0)
  x = np.concatenate([c[0] for c in members])
  y = np.concatenate([c[1] for c in members])
  model.fit(x, y, batch_size=len(x), epochs=100, verbose=0)
  return tff.learning.models.ModelWeights.from_model(model), members


def _attack(weights, members, non_members, **kwargs):
  return membership_audit.membership_inference(weights,
                                               keras_model_fn=_keras_model_fn(),
                                               members=members,
                                               non_members=non_members,
                                               label_kind=LabelKind.SINGLE,
                                               delta=1e-5,
                                               **kwargs)


def test_memorised_members_are_exposed(memorised):
  weights, members = memorised
  non_members = _clients(np.random.default_rng(2), [2] * 60)
  audit = _attack(weights, members, non_members)
  assert audit.auc > 0.9
  assert audit.advantage > 0.5
  assert audit.epsilon_lower_bound > 0
  assert (audit.members, audit.non_members) == (60, 60)
  assert 'NON-PRIVATE' in membership_audit.describe(audit)


def test_sets_the_model_never_saw_give_chance(memorised):
  """Neither set trained: AUC sd ~0.04 at 100 vs 100, so the AUC band is
  3.7 sd wide (~2e-4 flake rate with free seeds), and the bound is 0 with
  probability >= 1 - beta = 95% (beta is what the bound promises)."""
  weights, _ = memorised
  rng = np.random.default_rng(3)
  audit = _attack(weights, _clients(rng, [2] * 100), _clients(rng, [2] * 100))
  assert 0.35 < audit.auc < 0.65
  assert audit.epsilon_lower_bound == 0


class _Recording(list):
  """Client examples that remember which clients were read."""

  def __init__(self, clients):
    super().__init__(clients)
    self.read = []

  def __getitem__(self, k):
    self.read.append(k)
    return super().__getitem__(k)


def test_max_clients_draws_and_reads_only_that_many_members(memorised):
  weights, members = memorised
  non_members = _clients(np.random.default_rng(2), [2] * 60)
  recording = _Recording(members)
  audit = _attack(weights,
                  recording,
                  non_members,
                  max_clients=10,
                  rng=np.random.default_rng(7))
  assert (audit.members, audit.non_members) == (10, 60)
  assert len(set(recording.read)) == 10 == len(recording.read)
  again = _Recording(members)
  assert _attack(weights,
                 again,
                 non_members,
                 max_clients=10,
                 rng=np.random.default_rng(7)) == audit
  assert again.read == recording.read  # The generator decides.
  # A cap above the members keeps them all.
  assert _attack(weights, members, non_members, max_clients=61).members == 60
  with pytest.raises(ValueError, match='^max_clients '):
    _attack(weights, members, non_members, max_clients=0)


# --- Refusals ------------------------------------------------------------------


def _never_built():
  raise AssertionError('the model was built: the input should be refused first')


@pytest.mark.parametrize('members, non_members, pattern', [
    ([], [(np.zeros((1, 2), np.float32), np.zeros(1, np.int32))], '^members '),
    ([(np.zeros(
        (1, 2), np.float32), np.zeros(1, np.int32))], [], '^non_members '),
])
def test_no_members_or_no_non_members_is_refused_by_name(
    members, non_members, pattern):
  with pytest.raises(ValueError, match=pattern):
    membership_audit.membership_inference(None,
                                          keras_model_fn=_never_built,
                                          members=members,
                                          non_members=non_members,
                                          label_kind=LabelKind.SINGLE,
                                          delta=1e-5)


def test_bad_delta_and_empty_clients_are_refused():
  one = _clients(np.random.default_rng(0), [1])
  with pytest.raises(ValueError, match='^delta '):
    membership_audit.membership_inference(None,
                                          keras_model_fn=_never_built,
                                          members=one,
                                          non_members=one,
                                          label_kind=LabelKind.SINGLE,
                                          delta=1.5)
  weights = tff.learning.models.ModelWeights.from_model(_keras_model_fn()())
  with pytest.raises(ValueError, match='^datasets '):
    membership_audit.client_losses(weights,
                                   keras_model_fn=_never_built,
                                   datasets=[],
                                   label_kind=LabelKind.SINGLE)
  empty = tf.data.Dataset.from_tensor_slices((np.zeros(
      (0, _INPUT_DIM), np.float32), np.zeros(0, np.int32)))
  with pytest.raises(ValueError, match='client 1 has no examples'):
    membership_audit.client_losses(weights,
                                   keras_model_fn=_keras_model_fn(),
                                   datasets=[one[0], empty],
                                   label_kind=LabelKind.SINGLE)


# --- Members and non-members from the run's data -----------------------------


def _toy_data(sizes=(3, 1, 4, 2, 5, 3)):
  clients = _clients(np.random.default_rng(4), sizes)
  return FederatedData(name='toy',
                       client_ids=tuple(f'c{k}' for k in range(len(sizes))),
                       client_x=tuple(x for x, _ in clients),
                       client_y=tuple(y for _, y in clients),
                       test_x=clients[0][0],
                       test_y=clients[0][1],
                       num_classes=_CLASSES)


class _Streamed:
  """A streamed source over `_toy_data`, of unknown dataset cardinality."""
  name, input_dim, num_classes, image_shape = 'fake', _INPUT_DIM, _CLASSES, None
  vocab_size = None
  label_kind = LabelKind.SINGLE

  def __init__(self, data):
    self._data = data
    self.client_ids = list(data.client_ids)
    self.population = data.population

  def client_sizes(self):
    return self._data.client_sizes()

  def client_dataset(self, index):
    return tf.data.Dataset.from_tensor_slices(
        (self._data.client_x[index],
         self._data.client_y[index])).filter(lambda x, y: True)


@pytest.mark.parametrize('streamed', [False, True])
def test_members_are_the_training_clients_and_non_members_the_held_out(
    streamed):
  data = _toy_data()
  train, held = held_out_lib.hold_out_clients(
      _Streamed(data) if streamed else data, eval_clients=2, seed=0)
  members = membership_audit.member_examples(train)
  non_members = membership_audit.non_member_examples(held)
  assert (len(members), len(non_members)) == (4, 2)
  assert len(members[1:3]) == 2  # A slice is read lazily as well.
  everyone = list(members) + list(non_members)
  assert all(isinstance(e, tf.data.Dataset) == streamed for e in everyone)
  weights = tff.learning.models.ModelWeights.from_model(_keras_model_fn()())
  losses = membership_audit.client_losses(weights,
                                          keras_model_fn=_keras_model_fn(),
                                          datasets=everyone,
                                          label_kind=LabelKind.SINGLE)
  # Each of the data's clients exactly once: the same losses as all clients
  # in their original order, permuted.
  every_client = membership_audit.client_losses(
      weights,
      keras_model_fn=_keras_model_fn(),
      datasets=list(zip(data.client_x, data.client_y)),
      label_kind=LabelKind.SINGLE)
  training = [i for i in range(data.population) if i not in held.indices]
  np.testing.assert_allclose(losses,
                             every_client[training + list(held.indices)],
                             rtol=1e-6)


def test_describe_is_one_labelled_line():
  audit = membership.MembershipAudit(auc=0.61234,
                                     advantage=0.2,
                                     advantage_threshold=1.5,
                                     epsilon_lower_bound=0.4567,
                                     thresholds=41,
                                     members=20,
                                     non_members=20,
                                     delta=1e-5,
                                     beta=0.05)
  line = membership_audit.describe(audit)
  assert '\n' not in line
  assert line.startswith('NON-PRIVATE membership inference')
  for part in ('AUC 0.612', 'advantage 0.200', 'epsilon >= 0.457',
               '95% confidence', 'delta=1e-05', '20 members',
               '20 held-out clients'):
    assert part in line, part

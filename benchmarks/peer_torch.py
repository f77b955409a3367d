"""The benchmark's models and local training in PyTorch, for the peer engines.

Flower and pfl (`benchmarks.peer_flower`, `benchmarks.peer_pfl`) train the
same networks as tff-dp and the floor (`benchmarks.models`): the MLP
784-128-10 of W1 and, for W2, the EMNIST CNN of TFF's baselines (conv 32 3x3,
conv 64 3x3, max-pool 2, dropout 0.25, dense 128, dropout 0.5, dense 10;
1,199,882 parameters), on the same synthetic data
(`benchmarks.workloads.synthetic_data`) with the same hyperparameters
(`benchmarks.workloads.HYPERPARAMETERS`). Runs only inside a peer's
environment (PyTorch, no TensorFlow).
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from benchmarks import workloads as workloads_lib


class Mlp(nn.Module):
  """784-128-10 with ReLU, logits out."""

  def __init__(self):
    super().__init__()
    self.hidden = nn.Linear(workloads_lib.INPUT_DIM, 128)
    self.out = nn.Linear(128, workloads_lib.NUM_CLASSES)

  def forward(self, x):
    return self.out(F.relu(self.hidden(x)))


class Cnn(nn.Module):
  """TFF's EMNIST baseline CNN on flat 784-vectors, logits out."""

  def __init__(self):
    super().__init__()
    self.conv1 = nn.Conv2d(1, 32, 3)
    self.conv2 = nn.Conv2d(32, 64, 3)
    self.dense = nn.Linear(12 * 12 * 64, 128)
    self.out = nn.Linear(128, workloads_lib.NUM_CLASSES)

  def forward(self, x):
    x = x.reshape(-1, 1, 28, 28)
    x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
    x = F.dropout(x, 0.25, self.training)
    x = F.dropout(F.relu(self.dense(x.flatten(1))), 0.5, self.training)
    return self.out(x)


class WithLoss(nn.Module):
  """A model with the `loss` and `metrics` methods pfl's PyTorchModel needs."""

  def __init__(self, net: nn.Module):
    super().__init__()
    self.net = net

  def forward(self, x):
    return self.net(x)

  def loss(self, x, y, eval=False):  # pylint: disable=redefined-builtin
    self.train(not eval)
    return F.cross_entropy(self.net(x), y.long())

  @torch.no_grad()
  def metrics(self, x, y, eval=True):  # pylint: disable=redefined-builtin
    self.train(not eval)
    return {'loss': float(F.cross_entropy(self.net(x), y.long()))}


def build_model(model: str) -> WithLoss:
  """The workload's network (`workloads.ModelName` value), seeded."""
  torch.manual_seed(0)
  net = Mlp() if model == workloads_lib.ModelName.MLP.value else Cnn()
  return WithLoss(net)


def parameter_count(module: nn.Module) -> int:
  return sum(p.numel() for p in module.parameters())


def get_weights(module: nn.Module) -> list[np.ndarray]:
  return [p.detach().cpu().numpy().copy() for p in module.parameters()]


def set_weights(module: nn.Module, weights: list[np.ndarray]) -> None:
  with torch.no_grad():
    for p, w in zip(module.parameters(), weights):
      p.copy_(torch.from_numpy(np.asarray(w, dtype=np.float32)))


def local_sgd(module: WithLoss, x: np.ndarray, y: np.ndarray, *,
              workload: workloads_lib.Workload, round_num: int,
              client: int) -> None:
  """One client's local training: shuffled mini-batch SGD, as tff-dp's clients."""
  optimizer = torch.optim.SGD(
      module.parameters(),
      lr=workloads_lib.HYPERPARAMETERS.client_learning_rate)
  xs = torch.from_numpy(x)
  ys = torch.from_numpy(y)
  rng = np.random.default_rng([round_num, client])
  for _ in range(workload.epochs):
    order = torch.from_numpy(rng.permutation(len(x)))
    for start in range(0, len(x), workload.batch_size):
      idx = order[start:start + workload.batch_size]
      optimizer.zero_grad()
      module.loss(xs[idx], ys[idx]).backward()
      optimizer.step()

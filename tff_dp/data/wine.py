"""scikit-learn's wine recognition data as an offline federated dataset.

The UCI wine data (Forina et al.; 178 wines, 13 chemical measurements, 3
cultivars) ships with scikit-learn, so it needs no network. Each feature is
divided by its maximum over the published table (public data: the scaling
reveals nothing about a client), then the test examples are held out before
the rest is split into `--num_clients` clients by `--partition`.
"""

from sklearn import datasets

from tff_dp.data import federated_data
from tff_dp.data import offline
from tff_dp.data import registry


def load(request: registry.LoadRequest) -> federated_data.FederatedData:
  """`--dataset=wine` (a row of `tff_dp.data.registry`)."""
  raw = datasets.load_wine()
  return offline.federate_centralized(
      'wine',
      raw.data / raw.data.max(axis=0),
      raw.target,
      num_classes=3,
      preprocessing='sklearn load_wine, x / max per feature',
      num_clients=request.num_clients,
      partition=request.partition,
      seed=request.seed,
      test_fraction=request.test_fraction,
      dirichlet_alpha=request.dirichlet_alpha)

"""Federated datasets: offline arrays, TFF's benchmarks, imported tables.

The offline part (`federated_data`, `partition`, `offline`, `loading`) is pure
numpy / scikit-learn, so data can be prepared, inspected and checked before
TensorFlow is imported; `tff_datasets`, `benchmark_source` and
`client_data_source` stream through TensorFlow and are imported only when used.

Imports nothing of tff_dp outside `tff_dp.data` but `atomic_io` and `checks`: data
sources know nothing of privacy, mechanisms or programs.
"""

from tff_dp.data.federated_data import FederatedData
from tff_dp.data.offline import OfflineDataset
from tff_dp.data.offline import generate_synthetic
from tff_dp.data.offline import load_offline
from tff_dp.data.partition import Partition
from tff_dp.data.partition import make_partition
from tff_dp.data.partition import partition_dirichlet
from tff_dp.data.partition import partition_iid
from tff_dp.data.partition import partition_natural
from tff_dp.data.partition import partition_quantity_skew

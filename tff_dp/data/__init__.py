"""Federated datasets as numpy arrays: loading, partitioning, validation.

Pure numpy / scikit-learn: nothing here imports TensorFlow, so data can be
prepared, inspected and tested without the TFF runtime.
"""

from tff_dp.data.federated_data import FederatedData
from tff_dp.data.offline import generate_synthetic
from tff_dp.data.offline import load_offline
from tff_dp.data.offline import OfflineDataset
from tff_dp.data.partition import make_partition
from tff_dp.data.partition import Partition
from tff_dp.data.partition import partition_dirichlet
from tff_dp.data.partition import partition_iid
from tff_dp.data.partition import partition_natural
from tff_dp.data.partition import partition_quantity_skew

"""tff-dp: differentially private federated learning on TensorFlow Federated.

Subpackages by job, each importing only the layers below it (bottom first):
`atomic_io` and `checks`, `cohorts`, `privacy`, `data`, `audit`, `mechanisms`,
`config`, `config_checks`, `algorithms`, `execution`, `program`, `cli`. The
programs in `tff_dp.cli` are the only modules that read absl flags.
"""

__version__ = '0.1.0'

"""tff-dp: differentially private federated learning on TensorFlow Federated.

The package is split into small modules with one job each; the programs
(`tff_dp.train`, ...) are the only modules that read absl flags.
"""

__version__ = '0.1.0'

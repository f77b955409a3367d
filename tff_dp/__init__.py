"""tff-dp: differentially private federated learning on TensorFlow Federated.

Subpackages by job, each importing only the layers below it (bottom first):
`atomic_io`, `checks` and `processes`, `cohorts`, `privacy`, `data`, `audit`, `mechanisms`,
`config`, `simulation_path`, `config_checks`, `models`, `algorithms`, `execution`, `program`,
`sweeps`, `cli` (which alone uses `lazy_imports`, standard library only:
the stack's imports a run does not use, deferred), and beside the programs the Python API, `tff_dp.api`
(`tff_dp.train`). `models` (model architectures and how their parameters are
trained) may import `config` and `checks` only. The programs in `tff_dp.cli`
are the only modules that read absl's global flags.
"""

__version__ = '0.1.0'


def train(*args, **kwargs):
  """`tff_dp.api.train` (imported on first use: `import tff_dp` stays
  light)."""
  from tff_dp import api  # pylint: disable=g-import-not-at-top
  return api.train(*args, **kwargs)


def make_config(*args, **kwargs):
  """`tff_dp.api.make_config`."""
  from tff_dp import api  # pylint: disable=g-import-not-at-top
  return api.make_config(*args, **kwargs)

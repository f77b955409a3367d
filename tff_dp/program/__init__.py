"""One training run from a resolved config: prepare, train, evaluate, release, checkpoint, resume, state.

Reads no flags (the library API takes config objects); may import every layer
below it (`algorithms`, `mechanisms`, `privacy`, `cohorts`, `data`,
`execution`, `config`, `config_checks`, `atomic_io`), never `tff_dp.cli`.
"""

"""Federated learning processes: FedAvg/FedSGD, the grouped path, DP-FTRL, example-level DP-SGD, models.

`build_*` functions here return TFF processes. May import `tff_dp.mechanisms`,
`tff_dp.privacy`, `tff_dp.cohorts`, `tff_dp.data`, `tff_dp.config`, `tff_dp.models` and
`tff_dp.atomic_io`; never `execution`, `program` or `cli`.
"""

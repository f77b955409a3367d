"""DP mechanisms as TFF / TF Privacy aggregators: central Gaussian, local DP, sanitizing, weighting.

May import `tff_dp.privacy`, `tff_dp.cohorts`, `tff_dp.config` and
`tff_dp.atomic_io`; never `algorithms`, `program` or `cli`.
"""

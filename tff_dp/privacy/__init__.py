"""Privacy accounting: DP events, accountants, ledgers, calibration, run secrets.

Pure Python (no TensorFlow): may import `tff_dp.cohorts` and
`tff_dp.atomic_io` only. Everything that turns "what ran" into an epsilon, for
the central, local and record-level guarantees, lives here.
"""

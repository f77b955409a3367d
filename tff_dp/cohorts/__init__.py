"""Which clients take part in a round: Poisson, fixed-size and shuffled-epoch cohorts.

Pure Python, the bottom layer with `tff_dp.atomic_io`: imports nothing else of
tff_dp. The cohort is secret (its seed comes from `tff_dp.privacy.run_secrets`
at run time), since amplification by sampling assumes nobody knows it.
"""

"""DP mechanisms: the central mechanisms' registry, TF Privacy aggregators, local DP, sanitizing, weighting.

One module per central mechanism (`--dp_mechanism`), registered once in
`registry`. May import `tff_dp.privacy`, `tff_dp.cohorts`, `tff_dp.checks`
and `tff_dp.atomic_io`; never `config`, `config_checks`, `algorithms`,
`program` or `cli`.
The registry and the mechanism modules import no TensorFlow (the
configuration imports them); the TFF builders import it when called.
"""

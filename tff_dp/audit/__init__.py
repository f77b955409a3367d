"""Empirical privacy audits: one-shot estimate, lower bounds, membership attack.

The statistics layer of issue 16, pure numpy / scipy / scikit-learn (no
TensorFlow): from canary cosines and client losses that a run measured, the
one-shot epsilon estimate of Andrew et al. (`one_shot`, on `divergence`),
Steinke et al.'s one-run lower bound and a split Clopper-Pearson bound
(`lower_bound`), and a loss-threshold membership attack (`membership`). May
import `tff_dp.privacy`, `tff_dp.checks` and `tff_dp.atomic_io` only; the
program and the CLI call it, nothing below them does.
"""

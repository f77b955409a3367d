"""Sweeps and comparisons of runs: plans, a runner of training programs, tables and plots.

A sweep is a set of ordinary training runs, each a subprocess of the training
program with its own run directory, so it has a single run's guarantees (its
accounting, its resume rules). The tables and plots hold only what each run
released. May import `program` and the layers below it, never `tff_dp.cli`;
reads no flags (the programs `tff_dp.cli.sweep` and `tff_dp.cli.compare` do).
"""

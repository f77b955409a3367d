"""The command-line programs, the only readers of absl FLAGS: train, epsilon, audit, sweep, compare, import-data.

`cli_flags` defines every flag (the privacy groups in `privacy_flags`, range
checks from `checked_flags`); the programs turn flags into a config and call
`tff_dp.program` (sweeps and comparisons: `tff_dp.sweeps`). Nothing below
this layer imports it.
"""

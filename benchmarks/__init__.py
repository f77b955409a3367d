"""Benchmarks of tff-dp against the compute floor and plain TFF (issue 7).

Run from the repository root with the project's interpreter:

  .venv/bin/python -m benchmarks.run_all [--quick]

See benchmarks/README.md for what is measured and how to read the table.
"""

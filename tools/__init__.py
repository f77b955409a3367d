"""Developer tools that are not benchmarks: README generators and checks."""

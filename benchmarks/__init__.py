"""Benchmark scripts (not installed with the package): run as ``python -m benchmarks.<name>``."""

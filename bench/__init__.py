"""Benchmarks of restore-tests (scripts, and the bench.perf package)."""

"""Benchmarks for taskiq-abort: ``python3 -m benchmarks`` (see benchmarks/README.md)."""

"""Throwaway servers and certificates for the tests, benchmarks and the demo (never shipped)."""

"""Runnable recipes, tested by tests/test_examples.py."""

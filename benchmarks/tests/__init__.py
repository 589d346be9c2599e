"""Tests of the benchmark harness (``python -m benchmarks``), kept beside it."""

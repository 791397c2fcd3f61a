"""Benchmark harness for o365ingest (see docs/performance.md)."""

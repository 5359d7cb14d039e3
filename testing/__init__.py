"""Helpers for tests, benchmarks and the demo that are not part of the pipeline (e.g. random models)."""

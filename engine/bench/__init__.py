"""Benchmarks: load generation, quality through a served model, held-out text, and the A/B runner."""

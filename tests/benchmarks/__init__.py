"""Tests for the scripts in benchmarks/."""

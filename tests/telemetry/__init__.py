"""Tests for the telemetry step."""

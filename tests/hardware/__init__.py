"""Tests for the hardware step."""

"""Tests for the bench step."""

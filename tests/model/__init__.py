"""Tests for the model step."""

"""Tests for the plan step."""

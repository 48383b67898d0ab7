"""Tests for the serve step."""

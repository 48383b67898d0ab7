"""Tests for the quantize step."""

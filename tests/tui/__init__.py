"""Tests for the TUI and the quant-tui command."""

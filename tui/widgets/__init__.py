"""Reusable widgets of the quant-tui app, one per module."""

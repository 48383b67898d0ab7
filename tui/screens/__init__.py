"""The screens of the quant-tui app, one per module."""

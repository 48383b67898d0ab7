"""Serving: the vLLM launcher, its start-up log parser, and the watchdog that stops orphaned servers."""

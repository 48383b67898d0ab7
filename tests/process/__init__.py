"""Tests for child processes and the watchdog."""

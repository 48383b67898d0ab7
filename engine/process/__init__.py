"""Child processes: their own process group, line-by-line output, cancellation, a whole-group stop, and a watchdog."""

"""Telemetry: parsing vLLM /metrics and polling a running server."""

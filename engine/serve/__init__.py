"""Serving: the vLLM launcher, its command and backend, its start-up log facts and failure diagnosis, and the client."""

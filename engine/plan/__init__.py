"""Planning: vLLM facts, memory math, and the recommender that picks a method and settings."""

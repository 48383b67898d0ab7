"""Models: inspecting a checkpoint, resolving --model references, and the embedded demo model."""

"""Quantization: streaming data-free compressed-tensors conversion, and calibrated methods via llm-compressor."""

"""quant-tui's engine: hardware, models, memory math, quantization and serving, with no UI code."""

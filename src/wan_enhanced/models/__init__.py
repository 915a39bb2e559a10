"""Model construction and checkpoint loading (random, diffusers layout, official layout)."""

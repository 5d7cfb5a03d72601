"""Artifacts on disk: model.safetensors + trainlock.json (never pickle), and the SHA-256 binding."""

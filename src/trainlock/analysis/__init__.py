"""Studies of a model: per-layer diagnostics, Theorem 2.1/2.2 bounds, lock-strength prediction, compactification."""

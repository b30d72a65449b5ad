"""The per-order chain: steps, task state, wide rows."""

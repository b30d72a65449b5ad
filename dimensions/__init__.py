"""Dimensions: Redis look-ups and writes, and the T+1 reload from the warehouse."""

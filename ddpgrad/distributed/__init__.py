"""Data-parallel training across ranks: communicators, gradient reducer, DDP wrapper, samplers."""

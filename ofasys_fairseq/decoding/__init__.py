"""Decoding helpers (closed-set tries)."""

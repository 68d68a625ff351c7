"""Helpers for the side-by-side TLS terminator benchmark (see ../README.md)."""

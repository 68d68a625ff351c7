"""Tunnel: a lightweight, event-driven TLS terminator."""

__version__ = "0.1.0"

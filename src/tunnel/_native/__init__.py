"""_native: every ctypes call into libssl, libcrypto and libc, in one place.

Each shim checks the layout it relies on once, at import or first use, and falls back to
doing nothing when the check fails.

Room rules: imports nothing of Tunnel's.
"""

"""wire: PROXY protocol v1/v2 bytes. Pure: encode, and decode incrementally with a capped buffer.

Room rules: imports nothing of Tunnel's (only the standard library), so it can be fuzzed and
tested byte by byte on its own.
"""

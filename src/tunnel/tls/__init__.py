"""tls: configuration turned into ``ssl.SSLContext`` objects, done once per generation.

Certificates (loading, SNI name tables, expiry warnings, self-signed ones for gen-cert),
session-ticket keys, client identities and allow-lists, and files holding secrets (0600).
Nothing here runs per byte; per-handshake callbacks are installed here.

Room rules: may import ``tunnel.config``, ``tunnel.wire``, ``tunnel._native`` and
``tunnel.errors``; never the data plane, the process room or the CLI.
"""

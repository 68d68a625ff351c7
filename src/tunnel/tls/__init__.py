"""tls: configuration turned into ``ssl.SSLContext`` objects, done once per generation.

Certificates (loading, SNI name tables, expiry), session-ticket keys, client identities and
allow-lists. Nothing here runs per byte; per-handshake callbacks are installed here.

Room rules: may import ``tunnel.config``, ``tunnel.wire``, ``tunnel._native`` and
``tunnel.errors``; never the data plane, the process room or the CLI.
"""

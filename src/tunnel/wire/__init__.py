"""wire: bytes on the wire, pure. PROXY protocol v1/v2, and the HTTP/1.1 of Tunnel's servers.

PROXY headers are encoded, and decoded incrementally with a capped buffer
(``proxy_protocol`` is the public face of ``proxy_header``, ``proxy_encode`` and
``proxy_decode``); ``http1`` parses the requests the admin endpoint and the demo backend
answer, also with a capped buffer.

Room rules: imports nothing of Tunnel's (only the standard library), so it can be fuzzed and
tested byte by byte on its own.
"""

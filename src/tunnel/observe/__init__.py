"""observe: what operators see. Metrics, the supervisor's collector, the admin endpoint, logging.

Room rules: may import ``tunnel.tls``, ``tunnel.config``, ``tunnel.wire``,
``tunnel._native`` and ``tunnel.errors``; never the data plane, the process room or the CLI
(the data plane reports into this room, not the other way round).
"""

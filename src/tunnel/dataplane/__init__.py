"""dataplane: what runs per connection inside a worker process.

Accept gate, PROXY-in reading, the TLS endpoint over memory BIOs, the relay, backend
connect (plain or TLS), per-IP limits, the idle sweep, and the worker's event loop that
hosts them.

Room rules: may import ``tunnel.observe``, ``tunnel.tls``, ``tunnel.config``,
``tunnel.wire``, ``tunnel._native`` and ``tunnel.errors``; never ``tunnel.process`` or
``tunnel.cli`` (the data plane does not know about supervisors, signals or users).
"""

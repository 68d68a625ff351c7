"""process: the supervisor and the service plumbing around it; runs once, not per connection.

Binding listening sockets, forking workers, reload generations, drain, watch of certificate
files, daemonizing, pid file, dropping privileges, sd_notify.

Room rules: may import every room below it (``tunnel.dataplane`` and down); never
``tunnel.cli``. Signals are handled here and only here.
"""

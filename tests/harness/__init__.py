"""The one test harness of the integration, system and adversarial tests.

Small modules, each about one thing:

* :mod:`harness.waits` - poll a condition with a deadline (nothing here sleeps to
  synchronise);
* :mod:`harness.net` - loopback helpers: reserved ports, raw-socket reads, TLS records;
* :mod:`harness.hello` - ClientHello bytes: built by hand, or OpenSSL's first flight;
* :mod:`harness.procfs` - /proc figures of a process tree (children, fds, sockets, RSS);
* :mod:`harness.certs` - trustme CA and server certificates written to a test directory;
* :mod:`harness.config` - ini text for Tunnel;
* :mod:`harness.process` - a running supervisor: its log, what it bound, its workers;
* :mod:`harness.tunnel` - ``tunnel`` child processes, started and stopped by PID;
* :mod:`harness.service` - the same in the foreground or as a daemon (pid file, log file);
* :mod:`harness.backends` - plain TCP/Unix backends in threads and their handlers;
* :mod:`harness.clients` - a byte-exact TLS client over memory BIOs, ``openssl s_client``;
* :mod:`harness.http` - HTTPS through Tunnel: fetch, a slow backend, a client loop;
* :mod:`harness.admin` - the admin endpoint: a path's status and body, /metrics samples;
* :mod:`harness.peers` - nginx and HAProxy as PROXY protocol peers;
* :mod:`harness.pebble` - Pebble, a test ACME server, and its DNS;
* :mod:`harness.pool_peers` - named backends that come and go, a small DNS server;
* :mod:`harness.fixtures` - the pytest fixtures; each test folder's ``conftest.py``
  imports the ones it uses.

Tunnel listens on port 0 in these tests and the harness reads the port it bound from its
``listener NAME: ADDRESS -> ...`` log line, so no port is guessed and raced for. Ports
that something else must use (peers, addresses that refuse) come from
:func:`harness.net.reserve_port`, which keeps the port bound until the session ends.
"""

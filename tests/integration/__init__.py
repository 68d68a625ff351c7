"""Integration tests: Tunnel in a child process, real loopback sockets."""

"""Listening sockets: bind them, keep them across reloads, hand them to workers.

Each accept address gets one ``SO_REUSEPORT`` socket per worker index; the kernel spreads
new connections over them. The supervisor keeps every socket open for as long as its
address is configured, which is what makes workers replaceable without refusing anyone:
a connection queued on a socket waits in its backlog until some worker accepts it, and
only closing the *last* descriptor of a listening socket resets the connections queued
on it. A reload therefore reuses the sockets of unchanged addresses (``SocketPool.plan``)
and closes only those of removed addresses (``SocketPool.commit``).

Fewer ``workers`` after a reload do not close the sockets of the removed slots either:
they become *spares* that every remaining worker accepts from. Closing one would reset the
connections in its backlog, and there is no safe moment to do it: until the very close,
the kernel keeps spreading new connections onto it (Linux can migrate them to the other
sockets of the group, but only with the ``net.ipv4.tcp_migrate_req`` sysctl, off by
default). Sharing the spares keeps the load even (each worker's own socket, plus an equal
chance at each spare) and costs one descriptor per spare; when ``workers`` grows again,
the spares are the new slots' sockets. So an address holds as many sockets as the largest
worker count it has been served with.

Port 0 lets the kernel choose: the first worker's socket gets a free port and the other
workers' sockets join it there; :func:`bound_address` says which port that is (the
supervisor logs it, so tests and scripts need not guess a free port and race for it).
A reload that names the chosen port instead of 0 keeps the same sockets.

Sockets handed over by systemd socket activation (``LISTEN_FDS``) are used as they are:
one socket per address, shared by every worker.
"""

from __future__ import annotations

import contextlib
import errno
import socket

from tunnel.config import Address, Config, ListenerConfig
from tunnel.errors import ConfigError, ConfigErrors

Bound = dict[Address, list[socket.socket]]


def _bind_error(
    config: Config, listener: ListenerConfig, addr: Address, exc: OSError
) -> ConfigError:
    hints = {
        errno.EADDRINUSE: "another process listens there: stop it or change 'accept'",
        errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
        errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    }
    return ConfigError(
        f"cannot listen on {addr}: {exc.strerror or exc}",
        file=config.path,
        section=listener.name,
        key="accept",
        hint=hints.get(exc.errno or 0, "check the address"),
    )


def probe_free(addr: Address) -> None:
    """Raise OSError(EADDRINUSE) if anything already listens on ``addr``.

    Our sockets use SO_REUSEPORT, which would let a second Tunnel (same user) silently
    share the port; a plain bind first makes that an "address in use" error instead.
    """
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((addr.host, addr.port))


def bind_socket(addr: Address, backlog: int) -> socket.socket:
    """One non-blocking SO_REUSEPORT listening socket."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bound_address(sock: socket.socket) -> Address:
    """The address ``sock`` is bound to (with the port the kernel chose for port 0)."""
    host, port = sock.getsockname()[:2]
    return Address("tcp", host=str(host), port=int(port))


def _close(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()


class SocketPool:
    """The supervisor's listening sockets, by accept address and worker index."""

    def __init__(self, inherited: dict[Address, socket.socket] | None = None) -> None:
        self.bound: Bound = {}
        # Sockets from systemd socket activation: never closed by a reload.
        self.inherited = dict(inherited or {})

    def plan(self, config: Config, workers: int) -> Bound:
        """The sockets ``config`` needs: reuse what is bound, bind what is missing.

        Changes nothing in the pool; raises ConfigErrors (after closing what it bound)
        when an address cannot be bound.
        """
        planned: Bound = {}
        fresh: list[socket.socket] = []
        errors: list[ConfigError] = []
        kept = self._kept([addr for listener in config.listeners for addr in listener.accept])
        for listener in config.listeners:
            for addr in listener.accept:
                old = kept.get(addr, [])
                try:
                    planned[addr] = self._sockets_for(addr, listener.backlog, workers, old, fresh)
                except OSError as exc:
                    errors.append(_bind_error(config, listener, addr, exc))
        if errors:
            _close(fresh)
            raise ConfigErrors(errors)
        return planned

    def _sockets_for(
        self,
        addr: Address,
        backlog: int,
        workers: int,
        old: list[socket.socket],
        fresh: list[socket.socket],
    ) -> list[socket.socket]:
        if addr in self.inherited:
            return [self.inherited[addr]] * workers
        if not old and addr.port:
            probe_free(addr)
        socks = list(old)  # spares included: see the module's docstring
        for sock in socks:
            # listen() again on a listening socket only changes its backlog.
            sock.listen(backlog)
        while len(socks) < workers:
            # With port 0 only the first socket lets the kernel choose; the others must
            # join that port, or each worker would listen somewhere else.
            where = bound_address(socks[0]) if socks else addr
            sock = bind_socket(where, backlog)
            fresh.append(sock)
            socks.append(sock)
        return socks

    def _kept(self, wanted: list[Address]) -> Bound:
        """The bound sockets each of the ``wanted`` addresses keeps.

        Sockets bound for port 0 go to the address that names the port the kernel chose,
        if one does (a config rewritten with the logged port), else to port 0 again.
        """
        chosen = {
            bound_address(socks[0]): addr
            for addr, socks in self.bound.items()
            if addr.port == 0 and socks
        }
        named = {chosen[addr] for addr in wanted if addr in chosen}
        kept: Bound = {}
        for addr in wanted:
            if addr in chosen:
                kept[addr] = self.bound[chosen[addr]]
            elif addr in self.bound and addr not in named:
                kept[addr] = self.bound[addr]
        return kept

    def commit(self, planned: Bound) -> None:
        """Adopt ``planned``; close every socket it does not use any more."""
        keep = {id(sock) for socks in planned.values() for sock in socks}
        keep.update(id(sock) for sock in self.inherited.values())
        for socks in self.bound.values():
            _close([sock for sock in socks if id(sock) not in keep])
        self.bound = planned

    def discard(self, planned: Bound) -> None:
        """Close the sockets ``plan`` bound for a configuration that is not adopted."""
        keep = {id(sock) for socks in self.bound.values() for sock in socks}
        keep.update(id(sock) for sock in self.inherited.values())
        for socks in planned.values():
            _close([sock for sock in socks if id(sock) not in keep])

    def for_worker(
        self, config: Config, index: int, workers: int
    ) -> dict[str, list[socket.socket]]:
        """Worker ``index``'s sockets, per listener name: its own, and every spare."""
        return {
            listener.name: [
                sock
                for addr in listener.accept
                for slot, sock in enumerate(self.bound[addr])
                if slot == index or slot >= workers
            ]
            for listener in config.listeners
        }

    def close_all(self) -> None:
        """Close every socket (stop: new connections are refused from now on)."""
        for socks in self.bound.values():
            _close(socks)
        _close(list(self.inherited.values()))
        self.bound = {}


def close_foreign(pool: SocketPool, config: Config, index: int, workers: int) -> None:
    """In worker ``index`` after fork: close the copies of other workers' sockets."""
    mine = {
        id(sock) for socks in pool.for_worker(config, index, workers).values() for sock in socks
    }
    for socks in pool.bound.values():
        for sock in socks:
            if id(sock) not in mine:
                with contextlib.suppress(OSError):
                    sock.close()

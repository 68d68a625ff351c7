"""TLS towards backends (``tls = yes`` in a ``[backend:NAME]``): contexts and the protocol.

Theory of operation
-------------------
:class:`TLSBackendSide` replaces :class:`tunnel.dataplane.relay.PlainSide` on the backend socket
when the backend speaks TLS. Like the client side it runs its own TLS layer over two
``MemoryBIO`` objects. It sends the PROXY header (if any) in plaintext first, as PROXY
is a TCP-level protocol, then the ClientHello. Once the handshake completes, it hands
*itself* to the client side as the backend "transport" (:meth:`write` encrypts,
:meth:`write_eof` sends close_notify then FIN, flow control goes to the socket), so the
relay code needs no change and the plain path pays nothing for this.

Decrypted records go into the worker's shared read buffer (the ciphertext that arrived
there was first copied into the incoming BIO) and the client side takes them from it
with ``from_backend(n)`` exactly as for a plain backend. A failed handshake fails the
connect attempt, so the next address is tried (failover).

Contexts are built in the supervisor (:func:`build_backend_contexts`, so a bad ``ca`` or
``cert`` stops the start) and inherited by the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any, cast

from tunnel._native.bio import trim_bio
from tunnel.config import BackendConfig, Config
from tunnel.dataplane.relay import READ_SIZE, RELAY, TLSSide, _view
from tunnel.errors import ConfigError, ConfigErrors, TLSSetupError

log = logging.getLogger("tunnel.backend_tls")
_contexts: dict[str, ssl.SSLContext] = {}


def build_backend_context(backend: BackendConfig, file: str = "<config>") -> ssl.SSLContext:
    """A client context for one backend: verify against ``ca`` (or the system store)."""
    section = f"backend:{backend.name}"
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        key = "ca"
        if backend.ca:
            ctx.load_verify_locations(cafile=backend.ca)
        key = "cert"
        if backend.cert:
            ctx.load_cert_chain(backend.cert, backend.key)
        key = "keylog_file"
        if backend.keylog_file:
            ctx.keylog_filename = backend.keylog_file
            log.warning(
                "[backend:%s] keylog_file is on: TLS session secrets are written to %s",
                backend.name,
                backend.keylog_file,
            )
    except (OSError, ssl.SSLError) as exc:
        raise TLSSetupError(
            f"cannot load {getattr(backend, key)}: {getattr(exc, 'strerror', None) or exc}",
            file=file,
            section=section,
            key=key,
            hint="give a readable PEM file (cert: chain and key, or set 'key')",
        ) from None
    return ctx


def build_backend_contexts(config: Config) -> dict[str, ssl.SSLContext]:
    """Build the context of every TLS backend; ConfigErrors if any fails."""
    contexts: dict[str, ssl.SSLContext] = {}
    errors: list[ConfigError] = []
    for backend in config.backends:
        if not backend.tls:
            continue
        try:
            contexts[backend.name] = build_backend_context(backend, config.path)
        except ConfigError as exc:
            errors.append(exc)
    if errors:
        raise ConfigErrors(errors)
    return contexts


def install_backend_contexts(contexts: dict[str, ssl.SSLContext]) -> None:
    """Make ``contexts`` the ones :func:`backend_context` returns (workers inherit them)."""
    _contexts.clear()
    _contexts.update(contexts)


def backend_context(name: str) -> ssl.SSLContext | None:
    """The context built for backend ``name`` (None if it does not use TLS)."""
    return _contexts.get(name)


class TLSBackendSide(asyncio.BufferedProtocol):
    """Backend side over TLS; to the client side it looks like the backend transport."""

    def __init__(
        self,
        client: TLSSide,
        ctx: ssl.SSLContext,
        server_hostname: str | None,
        preamble: bytes,
        ready: asyncio.Future[None],
    ) -> None:
        self.client = client
        self.ctx = ctx
        self.server_hostname = server_hostname
        self.preamble = preamble
        self.ready = ready
        self.handshaking = True
        self.failed = False
        self.finished = False

    # -- protocol (events from the backend socket) ------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.sslobj = self.ctx.wrap_bio(
            self._in, self._out, server_side=False, server_hostname=self.server_hostname
        )
        if self.preamble:
            self.transport.write(self.preamble)
        self._handshake()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _view

    def buffer_updated(self, nbytes: int) -> None:
        self._in.write(_view[:nbytes])
        if self.handshaking:
            self._handshake()
        else:
            self._decrypt()

    def eof_received(self) -> bool:
        if self.handshaking:
            self._fail(ConnectionError("closed during the TLS handshake"))
            return False
        self._finished()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.failed:
            return  # reported through ``ready``: the connect attempt failed
        if self.handshaking:
            self._fail(exc or ConnectionError("closed during the TLS handshake"))
        else:
            self.client.backend_lost(exc)

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.state == RELAY:
            self.client.transport.resume_reading()

    # -- TLS --------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._out.pending:
            self.transport.write(self._out.read())

    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._flush()  # our alert
            self._fail(exc)
            return
        self._flush()
        self.release_buffers()
        self.handshaking = False
        if not self.ready.done():
            self.ready.set_result(None)
        self.client.attach_backend(cast(asyncio.Transport, self))
        if self._in.pending:
            self._decrypt()

    def release_buffers(self) -> None:
        """Free the memory BIOs' buffers where empty (see ``TLSSide.release_buffers``)."""
        trim_bio(self._in)
        trim_bio(self._out)

    def _fail(self, exc: BaseException) -> None:
        self.failed = True
        if not self.ready.done():
            self.ready.set_exception(exc)
        self.transport.abort()

    def _decrypt(self) -> None:
        read = self.sslobj.read
        client = self.client
        try:
            while self._in.pending:
                count = cast(int, read(READ_SIZE, _view))  # with a buffer: a byte count
                if not count:
                    self._finished()  # close_notify
                    break
                client.from_backend(count)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:
            self._finished()
        except ssl.SSLError as exc:
            client.close_early(f"backend TLS error: {exc.reason or exc}")
            return
        self._flush()

    def _finished(self) -> None:
        if not self.finished:
            self.finished = True
            self.client.backend_finished()

    # -- transport interface (used by the client side) --------------------------------
    def write(self, data: Any) -> None:
        """Encrypt ``data`` and send it to the backend."""
        try:
            self.sslobj.write(data)
        except ssl.SSLError as exc:
            self.client.close_early(f"backend TLS error: {exc.reason or exc}")
            return
        self._flush()

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """The client is done sending: close_notify, then FIN."""
        # SSLWantReadError: ours is sent, the backend's may come later.
        with contextlib.suppress(ssl.SSLError, ValueError):
            self.sslobj.unwrap()
        self._flush()
        if not self.transport.is_closing():
            self.transport.write_eof()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high=high, low=low)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def close(self) -> None:
        self.transport.close()

    def abort(self) -> None:
        self.transport.abort()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

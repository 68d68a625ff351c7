"""A worker's drain loses no connection it accepted, on either data plane.

These tests run workers in this process, on the uvloop event loop the worker process uses,
and send SIGTERM (the worker's handler, called directly) at an exact step of that loop, so
that the windows a reload opens under load are hit every time instead of once in many
runs:

* a connection the kernel queued just before SIGTERM is accepted in the same loop
  iteration in which the drain starts: the worker must count it and serve it before it
  exits. The Python plane counted it one step late and closed it unserved (the client
  saw its connection end right after the handshake): at the exit when it was alone, or
  at the end of the drain when another connection ended meanwhile;
* a connection in the middle of its handshake when the drain starts is served to the end;
* a connection queued after the drain started waits in the backlog of the shared
  listening socket (which the supervisor keeps open) and the next generation serves it.

``serve()`` returning stands for the worker process exiting: whatever a client has not
received by then, it never will.
"""

from __future__ import annotations

import asyncio
import os
import select
import socket
import ssl
import struct
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
import uvloop

from tunnel.config import parse_config
from tunnel.dataplane import fastplane
from tunnel.dataplane.plane import ENV
from tunnel.dataplane.worker import Worker
from tunnel.tls.bundle import build_bundle

from .harness import BackendFactory, BioClient, Certs, echo_handler, recv_exactly

pytestmark = pytest.mark.timeout(60)
T = TypeVar("T")


@pytest.fixture(params=["python", "compiled"])
def plane(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test on both planes, whatever plane this run of the suite asks for."""
    monkeypatch.setenv(ENV, str(request.param))
    fastplane.load.cache_clear()  # the choice is cached per process
    yield str(request.param)
    fastplane.load.cache_clear()


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """The supervisor's listening socket: each worker gets a copy, as a fork would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    with sock:
        yield sock


class Generation:
    """How the tests make workers: one config, one listening socket, copies of it."""

    def __init__(self, plane: str, certs: Certs, backend: str, listening: socket.socket):
        self.port = int(listening.getsockname()[1])
        self.config = parse_config(
            f"[tunnel]\ndataplane = {plane}\n"
            f"[test]\naccept = 127.0.0.1:{self.port}\ncert = {certs.cert_path}\n"
            f"key = {certs.key_path}\nconnect = {backend}\n"
        )
        self.bundle = build_bundle(self.config)
        self.listening = listening
        self.ctx = certs.client_context()

    def worker(self) -> Worker:
        """A worker of a new generation, on its own copy of the listening socket."""
        worker = Worker(self.config, self.bundle, {"test": [self.listening.dup()]})
        assert worker.planes["test"][0] == os.environ[ENV]
        return worker

    def client(self) -> BioClient:
        """A connection; it completes in the kernel, queued until a worker accepts it."""
        return BioClient(self.ctx, ("127.0.0.1", self.port))


def talk(client: BioClient, payload: bytes) -> bytes:
    """Handshake and echo ``payload`` (blocking: in a thread); the answer, or the error."""
    try:
        client.handshake()
        client.send(payload)
        return recv_exactly(client.recv, len(payload))
    except (AssertionError, OSError, ssl.SSLError) as exc:  # EOF, reset, TLS
        return repr(exc).encode()


def exchange(client: BioClient, payload: bytes, got: list[bytes]) -> None:
    """:func:`talk`, note the answer, then close."""
    try:
        got.append(talk(client, payload))
    finally:
        client.close()


def reset(client: BioClient) -> None:
    """Close with an RST: the worker sees the end of this connection at its next poll."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def wait_readable(sock: socket.socket) -> None:
    """Wait (in a thread) until the server has sent something."""
    readable, _, _ = select.select([sock], [], [], 10.0)
    assert readable, "no answer to the ClientHello"


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``condition`` on the loop (the worker runs on it) until true, at most ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def in_thread(call: Callable[[], T]) -> asyncio.Future[T]:
    """Run a blocking client step beside the worker's loop."""
    return asyncio.get_running_loop().run_in_executor(None, call)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on the event loop a worker process runs on."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


@pytest.fixture
def generation(
    plane: str, certs: Certs, start_backend: BackendFactory, listening: socket.socket
) -> Generation:
    return Generation(plane, certs, start_backend(echo_handler).address, listening)


@pytest.mark.parametrize("another_ends", [False, True], ids=["alone", "another_ends"])
def test_connection_queued_as_sigterm_arrives_is_served(
    generation: Generation, another_ends: bool
) -> None:
    """Accepted in the loop iteration that handles SIGTERM: counted, served, then exit.

    ``alone``: no other connection is live, so the drain would find nothing to wait for.
    ``another_ends``: the one live connection ends in the same iteration, before the new
    one is counted, so the count touches 0 while the drain waits.
    """
    got: list[bytes] = []

    async def main() -> None:
        worker = generation.worker()
        serving = asyncio.get_running_loop().create_task(worker.serve())
        first = generation.client()
        assert await in_thread(lambda: talk(first, b"warm-up")) == b"warm-up"
        if not another_ends:
            first.close()
            await until(lambda: not worker._live())  # its end reached the backend and back
        # In one step of the loop: the first connection resets (another_ends), a new one
        # is queued, and SIGTERM is handled. The loop's next poll sees both (the worker
        # still listens); the drain starts right after.
        if another_ends:
            reset(first)
        client = generation.client()
        worker._on_signal()
        answered = in_thread(lambda: exchange(client, b"accepted as the drain starts", got))
        await serving
        assert got == [b"accepted as the drain starts"], "exited before serving it"
        await answered

    run(main)


def test_reload_loses_neither_handshakes_nor_the_backlog(generation: Generation) -> None:
    """Mid-handshake at SIGTERM: finished by the old worker; queued after it stopped
    accepting: left in the backlog for the next generation, which serves it."""
    mid: list[bytes] = []
    queued: list[bytes] = []

    async def main() -> None:
        old = generation.worker()
        serving = asyncio.get_running_loop().create_task(old.serve())
        client = generation.client()
        client.sock.sendall(client.client_hello())
        await in_thread(lambda: wait_readable(client.sock))
        old._on_signal()  # the server's first flight has come: mid-handshake
        await until(lambda: old.stopping)
        waiting = generation.client()  # the old worker stopped accepting: in the backlog
        await in_thread(lambda: exchange(client, b"handshake in flight", mid))
        await serving
        assert mid == [b"handshake in flight"]
        readable, _, _ = select.select([waiting.sock], [], [], 0)
        assert not readable, "answered by a worker that stopped accepting"

        new = generation.worker()  # the next generation, on the same listening socket
        serving = asyncio.get_running_loop().create_task(new.serve())
        await in_thread(lambda: exchange(waiting, b"from the backlog", queued))
        new._on_signal()
        await serving
        assert queued == [b"from the backlog"]

    run(main)

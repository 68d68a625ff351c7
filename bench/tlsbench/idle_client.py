"""Open and hold many idle TLS connections; driven line by line over stdin.

Commands: ``open N`` (grow to N held connections, then print ``opened ok=K failed=F``)
and ``quit``. Run as a script: ``python idle_client.py --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl
import sys
import time

CONCURRENCY = 64
CONNECT_TIMEOUT = 10.0
BATCH_TIMEOUT = 90.0


def client_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Holder:
    def __init__(self, port: int) -> None:
        self.port = port
        self.ctx = client_context()
        self.writers: list[asyncio.StreamWriter] = []
        self.failed = 0

    async def _open_one(self, sem: asyncio.Semaphore) -> None:
        async with sem:
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port, ssl=self.ctx),
                    CONNECT_TIMEOUT,
                )
            except Exception:  # refused, reset, handshake failure, timeout: all count
                self.failed += 1
                return
            self.writers.append(writer)

    async def grow_to(self, total: int) -> None:
        sem = asyncio.Semaphore(CONCURRENCY)
        deadline = time.monotonic() + BATCH_TIMEOUT
        for _attempt in range(2):  # one retry pass for transient failures
            missing = total - len(self.writers)
            if missing <= 0:
                return
            tasks = [asyncio.create_task(self._open_one(sem)) for _ in range(missing)]
            _, pending = await asyncio.wait(tasks, timeout=max(1.0, deadline - time.monotonic()))
            for task in pending:
                task.cancel()
            self.failed += len(pending)

    async def close_all(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.writers.clear()


async def serve(port: int) -> None:
    holder = Holder(port)
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line or line[0] == "quit":
                return
            if line[0] == "open" and len(line) == 2:
                holder.failed = 0
                await holder.grow_to(int(line[1]))
                await asyncio.sleep(0.5)  # let servers finish their side of the handshake
                print(f"opened ok={len(holder.writers)} failed={holder.failed}", flush=True)
    finally:
        with contextlib.suppress(Exception):
            await holder.close_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()

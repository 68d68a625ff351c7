"""Memory at rest and imported modules of ``tunnel run``: the supervisor and each worker.

Starts ``python -m tunnel run`` (the ``src/`` of this checkout, or ``--src DIR``) with one
listener on a fresh self-signed certificate (written to a temporary directory, removed at
the end) in front of a tiny plain backend in this process, for each worker count asked
for. Once every process has reported its modules (``TUNNEL_DEBUG_MODULES``, see
``tunnel.observe.modules``) and one request went through, it waits ``--settle`` seconds
and reads, per process, ``Pss`` and ``Rss`` from ``/proc/PID/smaps_rollup`` and the
number of modules in ``sys.modules``, and ``Pss_Anon`` (anonymous and heap pages: the
figure that does not move with how many other processes map the same shared libraries,
so the one to compare between runs). ``--admin`` also turns the admin endpoint on and
scrapes ``/metrics`` once before measuring (what rendering costs the supervisor).

``--floor`` also measures what any two CPython processes of this image cost: one
interpreter imports exactly the modules Tunnel's worker had (its list from the first
run), collects, freezes and returns free heap pages as the supervisor does, forks once,
and then both processes only wait. Nothing runs after the fork but that wait, so the
difference between Tunnel's supervisor + 1 worker and this pair is what serving itself
costs; the pair is the floor for any design that keeps a supervisor and a worker in
CPython 3.11 with these modules.

Usage: ``python bench/footprint.py [--workers 1,2] [--admin] [--floor] [--src DIR] [--json]``
(a few seconds per worker count). Nothing is written outside the temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import site
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
DEADLINE = 20.0
ENV_MODULES = "TUNNEL_DEBUG_MODULES"  # tunnel.observe.modules


@dataclass
class Sample:
    """One process of a running Tunnel."""

    role: str
    pid: int
    modules: int
    pss_kib: int
    rss_kib: int
    anon_kib: int  # Pss_Anon: the Python heap, the C heap and the other anonymous mappings


def write_cert(path: Path) -> None:
    """A self-signed ECDSA P-256 certificate for localhost plus its key, as one PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key_pem)


def start_backend() -> tuple[socket.socket, int]:
    """A plain backend answering one tiny HTTP response per connection (daemon thread)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    threading.Thread(target=serve, daemon=True).start()
    return server, int(server.getsockname()[1])


def free_ports(count: int) -> list[int]:
    """``count`` different currently unused ports on 127.0.0.1."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def write_config(path: Path, cert: Path, workers: int, port: int, backend: int, admin: int) -> None:
    """The configuration measured: one listener, ``workers`` workers, admin optional."""
    lines = ["[tunnel]", f"workers = {workers}", "log_level = warning"]
    if os.geteuid() == 0:
        lines.append("allow_root = yes")  # a throw-away measurement, on loopback only
    if admin:
        lines.append(f"admin = 127.0.0.1:{admin}")
    lines += ["[web]", f"accept = 127.0.0.1:{port}", f"cert = {cert}"]
    lines += [f"connect = 127.0.0.1:{backend}", ""]
    path.write_text("\n".join(lines))


def smaps(pid: int) -> tuple[int, int, int]:
    """(Pss, Rss, Pss_Anon) of ``pid`` in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        fields[name] = int(rest.split()[0])
    return fields["Pss"], fields["Rss"], fields["Pss_Anon"]


def wait_for(
    what: str, check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path
) -> None:
    """Poll ``check`` until true; give up after DEADLINE or if Tunnel exited."""
    deadline = time.monotonic() + DEADLINE
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            why = f"exited ({proc.returncode})" if proc.poll() is not None else "timed out"
            raise SystemExit(f"tunnel {why} waiting for {what}:\n{log.read_text()}")
        time.sleep(0.05)


def one_request(port: int, ctx: ssl.SSLContext) -> bytes:
    """One HTTPS request through Tunnel, on a new connection; the reply up to its close."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
        return reply


def interpreter(src: Path, no_site: bool) -> tuple[list[str], dict[str, str]]:
    """The command prefix and environment that run Python on ``src`` as measured."""
    pythonpath = [str(src)]
    flags = []
    if no_site:
        # What a plain interpreter imports: no .pth files of this machine's site-packages
        # (e.g. a sandbox's CA bundle hook that loads certifi and zipfile into every
        # Python process), but the same packages.
        pythonpath += site.getsitepackages()
        flags = ["-S"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(pythonpath))
    return [sys.executable, *flags], env


# The floor pair (see the module's docstring): argv[1] names a file of module names.
FLOOR = """
import gc, os, sys, importlib, ctypes, ctypes.util
for name in open(sys.argv[1]).read().split():
    if "__main__" not in name:
        try:
            importlib.import_module(name)
        except Exception:
            pass
gc.collect()
libc = ctypes.util.find_library("c")
if libc:
    ctypes.CDLL(libc).malloc_trim(0)
gc.freeze()
child = os.fork()
if child:
    sys.stdout.write(f"{os.getpid()} {child}\\n")
    sys.stdout.flush()
sys.stdin.read()
"""


def floor(src: Path, no_site: bool, modules: list[str], settle: float) -> list[Sample]:
    """The two-process floor: the worker's modules imported, one fork, nothing run after."""
    with tempfile.TemporaryDirectory(prefix="tunnel-footprint-") as tmp:
        names = Path(tmp) / "modules"
        names.write_text("\n".join(modules))
        prefix, env = interpreter(src, no_site)
        proc = subprocess.Popen(
            [*prefix, "-c", FLOOR, str(names)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None
        try:
            pids = [int(pid) for pid in proc.stdout.readline().split()]
            if len(pids) != 2:
                raise SystemExit("the floor process did not start")
            time.sleep(settle)
            samples = []
            for role, pid in zip(("floor parent", "floor child"), pids, strict=True):
                pss, rss, anon = smaps(pid)
                samples.append(Sample(role, pid, len(modules), pss, rss, anon))
            return samples
        finally:
            proc.stdin.close()  # both processes wait on it: its end is their exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def measure(
    src: Path, workers: int, *, admin: bool, no_site: bool, traffic: int, settle: float
) -> tuple[list[Sample], list[str]]:
    """Start Tunnel with ``workers`` workers, sample every process; also the worker's modules."""
    with tempfile.TemporaryDirectory(prefix="tunnel-footprint-") as tmp:
        root = Path(tmp)
        cert, config, dump = root / "cert.pem", root / "tunnel.ini", root / "modules"
        dump.mkdir()
        write_cert(cert)
        backend, backend_port = start_backend()
        port, admin_port = free_ports(2)
        admin_port = admin_port if admin else 0
        write_config(config, cert, workers, port, backend_port, admin_port)
        prefix, env = interpreter(src, no_site)
        env[ENV_MODULES] = str(dump)
        command = [*prefix, "-m", "tunnel", "run", "-c", str(config)]
        log = (root / "stderr").open("wb")
        proc = subprocess.Popen(command, env=env, stderr=log)
        try:
            reported = lambda: len(list(dump.glob("*.modules"))) == workers + 1  # noqa: E731
            wait_for("every process to report its modules", reported, proc, root / "stderr")
            client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            client.load_verify_locations(cafile=cert)  # self-signed: its own CA
            for _ in range(max(1, traffic)):
                if not one_request(port, client).endswith(b"ok"):
                    raise SystemExit("a request through Tunnel did not get the backend's reply")
            if admin:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics") as reply:
                    reply.read()
            time.sleep(settle)  # let the request's garbage go: this measures memory at rest
            samples, modules = [], []
            for path in sorted(dump.glob("*.modules")):
                role, _, pid = path.stem.partition("-")
                pss, rss, anon = smaps(int(pid))
                names = path.read_text().split()
                if role == "worker":
                    modules = names
                samples.append(Sample(role, int(pid), len(names), pss, rss, anon))
            samples.sort(key=lambda s: s.role != "supervisor")
            return samples, modules
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            backend.close()
            log.close()


def report(workers: int | str, samples: list[Sample]) -> list[str]:
    """Markdown table rows for one run."""
    rows = []
    for s in samples:
        pss, rss, anon = s.pss_kib / 1024, s.rss_kib / 1024, s.anon_kib / 1024
        rows.append(f"| {workers} | {s.role} | {s.modules} | {pss:.1f} | {anon:.1f} | {rss:.1f} |")
    pss = sum(s.pss_kib for s in samples) / 1024
    rss = sum(s.rss_kib for s in samples) / 1024
    anon = sum(s.anon_kib for s in samples) / 1024
    rows.append(f"| {workers} | **total** | | **{pss:.1f}** | {anon:.1f} | {rss:.1f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--admin", action="store_true", help="admin endpoint on, scraped once")
    # TUNNEL_BENCH_SRC, as bench/run.py reads it: measure a worktree's src/ the same way.
    default_src = Path(os.environ.get("TUNNEL_BENCH_SRC") or HERE.parent / "src")
    parser.add_argument("--src", type=Path, default=default_src, help="Tunnel's src/")
    parser.add_argument(
        "--requests", type=int, default=1, help="HTTPS requests (one connection each) first"
    )
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before sampling")
    parser.add_argument(
        "--no-site", action="store_true", help="python -S: skip site-packages' .pth files"
    )
    parser.add_argument(
        "--floor", action="store_true", help="also the floor: two idle forked interpreters"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    results: dict[int | str, list[Sample]] = {}
    modules: list[str] = []
    for count in (int(n) for n in args.workers.split(",")):
        results[count], modules = measure(
            args.src.resolve(),
            count,
            admin=args.admin,
            no_site=args.no_site,
            traffic=args.requests,
            settle=args.settle,
        )
    if args.floor:
        results["floor"] = floor(args.src.resolve(), args.no_site, modules, args.settle)
    if args.json:
        print(json.dumps({n: [asdict(s) for s in ss] for n, ss in results.items()}, indent=1))
        return 0
    print("| workers | process | modules | PSS MiB | anonymous PSS MiB | RSS MiB |")
    print("|---|---|---|---|---|---|")
    for count, samples in results.items():
        print("\n".join(report(count, samples)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Instructions per full TLS 1.3 handshake and per resumed connection, by library.

    python bench/sslcost.py [--targets tunnel,haproxy] [--count 40] [--out DIR]
                            [--functions SSL_do_handshake,X509_verify_cert,...]

Runs the serving process (1 worker) of each target under callgrind, with instrumentation
switched on only around ``count`` operations of one kind (after a warm-up):

- ``full``: a fresh TLS 1.3 ECDSA handshake, then ``GET /small`` read to EOF;
- ``resume``: the same with the session of the previous connection (a resumption);
- ``bare``: a fresh handshake and nothing else, as ``openssl s_time -new`` does;
- ``s_time_new`` / ``s_time_reuse``: ``count`` seconds of bench/profile.py's load (4
  concurrent ``openssl s_time`` clients), per connection they report.

Prints, per target and kind, the instructions per operation split by shared object
(libcrypto, libssl, libc, the rest) and the inclusive instructions per operation of a
few exported OpenSSL functions (where the difference between two targets comes from).
The raw callgrind files are kept under ``--out`` for ``callgrind_annotate``.
"""

from __future__ import annotations

import argparse
import base64
import glob
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tlsbench.backend import start_backend
from tlsbench.certs import make_certs
from tlsbench.loads import run_s_time
from tlsbench.procs import Registry, process_tree, raise_nofile_limit, wait_for_port
from tlsbench.profiling import World, callgrind_wrap
from tlsbench.targets import TARGETS, Launch, Setup, Target

# Exported functions whose inclusive cost says where a handshake's instructions go.
FUNCTIONS = (
    "SSL_do_handshake",
    "SSL_new",
    "SSL_free",
    "SSL_read",
    "SSL_write",
    "SSL_shutdown",
    "X509_verify_cert",
    "X509_STORE_CTX_new_ex",
    "X509_STORE_CTX_init",
    "EVP_PKEY_CTX_new_from_pkey",
    "EVP_DigestSignInit_ex",
    "EVP_PKEY_derive",
    "EVP_PKEY_keygen",
    "EVP_MAC_fetch",
    "EVP_CIPHER_fetch",
    "EVP_MD_fetch",
    "EVP_KEYMGMT_fetch",
    "OPENSSL_LH_doall_arg",
    "PEM_write_bio_SSL_SESSION",
    "i2d_SSL_SESSION",
    "SSL_CTX_flush_sessions",
    "ERR_clear_error",
    "malloc",
    "free",
    "strcmp",
)


def with_ticket_keys(path: Path) -> None:
    """Make Tunnel and HAProxy encrypt tickets with the keys in ``path`` (80 bytes each).

    Tunnel: ``ticket_key_file``; HAProxy: ``tls-ticket-keys`` (one base64 key a line).
    """
    b64 = path.with_suffix(".b64")
    data = path.read_bytes()
    lines = [base64.b64encode(data[i : i + 80]).decode() for i in range(0, len(data), 80)]
    b64.write_text("\n".join(lines) + "\n")

    def tunnel(s: Setup) -> Launch:
        launch = tunnel_launch(s)
        conf = s.workdir / "tunnel.ini"
        conf.write_text(conf.read_text() + f"ticket_key_file = {path}\n")
        return launch

    def haproxy(s: Setup) -> Launch:
        launch = haproxy_launch(s)
        conf = s.workdir / "haproxy.cfg"
        text = conf.read_text().replace(" ciphersuites ", f" tls-ticket-keys {b64} ciphersuites ")
        conf.write_text(text)
        return launch

    tunnel_launch, haproxy_launch = TARGETS["tunnel"].launch, TARGETS["haproxy"].launch
    assert tunnel_launch is not None and haproxy_launch is not None
    TARGETS["tunnel"] = Target("tunnel", tunnel, None)
    TARGETS["haproxy"] = Target("haproxy", haproxy, "haproxy")


def _client_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


def connections(port: int, count: int, ctx: ssl.SSLContext, kind: str) -> int:
    """``count`` connections of ``kind``; return how many resumed.

    "bare" is what ``openssl s_time -new`` does: a handshake, then the socket is closed
    (no request, no close_notify). The others send one small request and read to EOF.
    """
    session, resumed = None, 0
    for _ in range(count):
        raw = socket.create_connection(("127.0.0.1", port), timeout=60)
        with raw, ctx.wrap_socket(raw, session=session) as tls:
            if kind == "bare":
                continue  # SSLSocket.close() sends no close_notify
            tls.sendall(b"GET /small HTTP/1.0\r\n\r\n")
            while tls.recv(65536):
                pass
            resumed += tls.session_reused
            if kind == "resume":
                session = tls.session
    return resumed


def annotate(files: list[str], inclusive: bool) -> str:
    """callgrind_annotate's text for ``files`` (all functions, no threshold)."""
    out = []
    for name in files:
        argv = ["callgrind_annotate", "--show=Ir", f"--inclusive={'yes' if inclusive else 'no'}"]
        out.append(
            subprocess.run(
                [*argv, "--threshold=100", name], capture_output=True, text=True, timeout=600
            ).stdout
        )
    return "\n".join(out)


_ROW = re.compile(r"^\s*([0-9,]+) \(.*?\)\s+(\S+?)(?: \'\d+\')?\s+\[(.+)\]\s*$")


def by_object(text: str) -> tuple[int, dict[str, int]]:
    """(total, exclusive instructions by shared object) from a non-inclusive annotation."""
    total, out = 0, {}
    for line in text.splitlines():
        if line.rstrip().endswith("PROGRAM TOTALS"):
            total += int(line.split()[0].replace(",", ""))
            continue
        match = _ROW.match(line)
        if match:
            obj = os.path.basename(match.group(3))
            out[obj] = out.get(obj, 0) + int(match.group(1).replace(",", ""))
    return total, out


def by_function(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """Inclusive instructions of the exported functions ``names`` (summed over objects)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        match = _ROW.match(line)
        if match:
            name = match.group(2).split(":")[-1]
            if name in names:
                out[name] = out.get(name, 0) + int(match.group(1).replace(",", ""))
    return out


def library(obj: str) -> str:
    for prefix, label in (("libcrypto", "libcrypto"), ("libssl", "libssl"), ("libc.so", "libc")):
        if obj.startswith(prefix):
            return label
    return "rest"


def measure(
    world: World, target: str, kind: str, count: int, keep: Path, extra: list[str]
) -> dict[str, float]:
    """Per-operation instructions of ``target`` for ``kind`` ("full", "resume", "bare";
    "s_time_new" and "s_time_reuse": ``count`` seconds of 4 ``openssl s_time`` clients)."""
    out = Path(tempfile.mkdtemp(prefix=f"cg-{target}-{kind}-", dir=keep)) / "callgrind.out"
    wrap = callgrind_wrap(out, extra)
    managed, port, _workdir = world.start(target, "ecdsa", f"sc-{target}-", wrap)
    ctx = _client_context()
    try:
        wait_for_port(managed, port, timeout=300)
        connections(port, 20, ctx, "full" if kind.startswith("s_time") else kind)  # warm-up
        server = process_tree(managed.pid)[-1]  # the worker (Tunnel) or the only process
        subprocess.run(["callgrind_control", "-i", "on", str(server)], capture_output=True)
        if kind.startswith("s_time"):  # the load of bench/profile.py: 4 clients, count s
            result = run_s_time(port, count, 4, reuse=kind == "s_time_reuse")
            count, resumed = result.connections, result.reused
            print(f"{target} {kind}: {count} connections, {resumed} resumed", file=sys.stderr)
        else:
            resumed = connections(port, count, ctx, kind)
        subprocess.run(["callgrind_control", "-i", "off", str(server)], capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(server)], capture_output=True)
        deadline = time.monotonic() + 60
        while not glob.glob(f"{out}.{server}.*") and time.monotonic() < deadline:
            time.sleep(0.2)
        files = sorted(glob.glob(f"{out}.{server}.*"))
    finally:
        world.registry.stop(managed)
    if not kind.startswith("s_time") and resumed != (count - 1 if kind == "resume" else 0):
        print(f"warning: {target} {kind}: {resumed} of {count} resumed", file=sys.stderr)
    total, objects = by_object(annotate(files, inclusive=False))
    row: dict[str, float] = {"total": total / count}
    for obj, n in objects.items():
        row[library(obj)] = row.get(library(obj), 0) + n / count
    for name, n in by_function(annotate(files, inclusive=True), FUNCTIONS).items():
        row[f"fn:{name}"] = n / count
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="tunnel,haproxy")
    parser.add_argument("--kinds", default="full,resume")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="keep callgrind files here")
    parser.add_argument("--ticket-keys", action="store_true", help="configured ticket keys")
    parser.add_argument(
        "--valgrind-arg", action="append", default=[], help="e.g. --cache-sim=yes (kept files)"
    )
    args = parser.parse_args(argv)
    raise_nofile_limit()
    registry = Registry()
    tmp = Path(tempfile.mkdtemp(prefix="tunnel-sslcost-"))
    keep = args.out or tmp
    keep.mkdir(parents=True, exist_ok=True)
    try:
        certs = make_certs(tmp)
        if args.ticket_keys:
            keys = tmp / "ticket.key"
            keys.write_bytes(os.urandom(240))  # HAProxy wants 3 keys
            keys.chmod(0o600)
            with_ticket_keys(keys)
        backend = start_backend(registry, tmp / "backend", 1)
        world = World(registry, tmp, backend.port, certs)
        for kind in args.kinds.split(","):
            for target in args.targets.split(","):
                row = measure(world, target, kind, args.count, keep, args.valgrind_arg)
                libs = " ".join(
                    f"{k}={row.get(k, 0):,.0f}" for k in ("total", "libcrypto", "libssl", "libc")
                )
                print(f"{kind:6s} {target:8s} {libs} rest={row.get('rest', 0):,.0f}")
                for key in sorted(k for k in row if k.startswith("fn:")):
                    print(f"    {key[3:]:28s} {row[key]:12,.0f}")
                sys.stdout.flush()
    finally:
        registry.stop_all()
        if args.out is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

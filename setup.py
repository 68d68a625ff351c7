"""Build of the optional compiled data plane (``tunnel.dataplane._fastplane``).

Also ``tunnel._native._ticketkeys``, the session-ticket key callback in C: a module of its
own because the TLS layer uses it, and that layer may not import the data plane (imports
run cli -> process -> dataplane -> observe -> tls -> config -> wire -> _native). Its source
is with the others in ``src/tunnel/dataplane/csrc/``.

Everything else is in pyproject.toml. The extension is optional: where it cannot be built
(no compiler, no OpenSSL headers) the install still succeeds, and Tunnel serves every
listener on the Python data plane, saying so at start and in ``tunnel check``.

``TUNNEL_ASAN=1`` builds it with AddressSanitizer (load libasan first: docs/performance.md).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CFLAGS = [
    "-O2",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-std=gnu11",
    "-fno-strict-aliasing",
    "-fvisibility=hidden",  # only the PyInit_ functions are exported
]
SOURCES = [
    f"src/tunnel/dataplane/csrc/{name}.c"
    for name in (
        "fp_core",
        "fp_relay",
        "fp_connect",
        "fp_out",
        "fp_events",
        "fp_handshake",
        "fp_proxy",
        "fp_module",
        "fp_listener",
        "fp_policy",
        "fp_backend_tls",
        "fp_backend_relay",
        "fp_plain_client",
        "fp_passthrough",
        "fp_wait",
        "fp_quiet",
        "fp_ja4",
    )
]
LDFLAGS: list[str] = []
if os.environ.get("TUNNEL_ASAN") == "1":
    CFLAGS += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g", "-O1"]
    LDFLAGS += ["-fsanitize=address"]


class OptionalBuildExt(build_ext):
    """Build the extension if possible; on failure, say so and go on without it."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure means "no extension"
            _skipped(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            _skipped(exc)


def _skipped(exc: BaseException) -> None:
    print(
        f"warning: the compiled data plane was not built ({exc}); "
        "Tunnel will use the Python data plane",
        file=sys.stderr,
    )


setup(
    ext_modules=[
        Extension(
            "tunnel.dataplane._fastplane",
            SOURCES,
            depends=[
                "src/tunnel/dataplane/csrc/fastplane.h",
                "src/tunnel/dataplane/csrc/fp_backend_tls.h",
            ],
            libraries=["ssl", "crypto"],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
            optional=True,
        ),
        Extension(
            "tunnel._native._ticketkeys",
            ["src/tunnel/dataplane/csrc/ticket_keys.c"],
            libraries=["ssl", "crypto"],
            extra_compile_args=CFLAGS,
            extra_link_args=LDFLAGS,
            optional=True,
        ),
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)

"""Debug aid: the modules a serving process has imported, written where a test can read them.

With ``TUNNEL_DEBUG_MODULES=DIR`` in the environment, the supervisor (once its workers are
started) and each worker (once it accepts) write the sorted names in ``sys.modules`` to
``DIR/ROLE-PID.modules``. ``bench/footprint.py`` counts them and a system test checks that
no serving process imports what only some commands need (certificate parsing, metrics
rendering, the demo). Without the variable this does nothing.

The list is written by a short-lived forked child: listing ``sys.modules`` takes a
reference to every module name, and in CPython 3.11 each reference count written copies
the page it is on, which the process shares with the supervisor and the other workers.
Done in this process, the debug aid itself made ~0.8 MB of each process private and so
inflated the ``bench/footprint.py`` figures it exists for.
"""

from __future__ import annotations

import contextlib
import os
import sys

ENV = "TUNNEL_DEBUG_MODULES"


def report_modules(role: str) -> None:
    """Write this process's imported module names to ``$TUNNEL_DEBUG_MODULES`` (if set)."""
    directory = os.environ.get(ENV)
    if not directory:
        return
    path = os.path.join(directory, f"{role}-{os.getpid()}.modules")
    try:
        child = os.fork()
    except OSError:
        return  # a debug aid never stops a process from serving
    if child:
        os.waitpid(child, 0)
        return
    try:  # the child: write the list and leave without running any exit handler
        text = "".join(f"{name}\n" for name in sorted(sys.modules))
        with contextlib.suppress(OSError):
            # Written whole, then renamed: a reader never sees half a list.
            with open(path + ".tmp", "w", encoding="utf-8") as stream:
                stream.write(text)
            os.replace(path + ".tmp", path)
    finally:
        os._exit(0)

"""The system tests' ``tunnel`` fixture fails a test whose tunnel printed a crash.

A worker that raised is restarted by the supervisor, so the test that caused it could
pass; the fixture's teardown looks at every started process's output instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from harness.tunnel import Launcher, base_env


def _finished(launcher: Launcher, code: str) -> None:
    proc = launcher.start_command([sys.executable, "-c", code])
    proc.popen.wait(timeout=30)


def test_a_traceback_fails_the_check(tmp_path: Path, home: Path) -> None:
    launcher = Launcher(tmp_path, base_env(home))
    _finished(launcher, "import sys; print('ok'); 1 / 0")
    with pytest.raises(AssertionError, match="Traceback"):
        launcher.check_logs()


def test_an_asan_report_fails_the_check(tmp_path: Path, home: Path) -> None:
    launcher = Launcher(tmp_path, base_env(home))
    _finished(launcher, "import sys; sys.stderr.write('==1==ERROR: AddressSanitizer: x\\n')")
    with pytest.raises(AssertionError, match="AddressSanitizer"):
        launcher.check_logs()


def test_clean_output_and_expected_tracebacks_pass(tmp_path: Path, home: Path) -> None:
    launcher = Launcher(tmp_path, base_env(home))
    _finished(launcher, "print('serving')")
    launcher.check_logs()
    _finished(launcher, "1 / 0")
    launcher.tracebacks_expected = True
    launcher.check_logs()

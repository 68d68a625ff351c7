"""Installing missing tools and describing the machine."""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import os
import platform
import re
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

# binary -> Debian package providing it
APT_PACKAGES = {
    "nginx": "nginx",
    "wrk": "wrk",
    "openssl": "openssl",
    "hitch": "hitch",
    "haproxy": "haproxy",
    "stunnel": "stunnel4",
}
ESSENTIAL = ("nginx", "wrk", "openssl")  # backend and load generators
STREAM_MODULE_GLOB = "/usr/lib/nginx/modules/ngx_stream_module.so"


def _apt_install(packages: list[str]) -> bool:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    print(f"installing: {' '.join(packages)}", flush=True)
    if subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode == 0:
        return True
    print("apt-get install failed; running apt-get update and retrying", flush=True)
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
    return subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode == 0


def nginx_has_stream() -> bool:
    if glob.glob(STREAM_MODULE_GLOB):
        return True
    if not shutil.which("nginx"):
        return False
    info = subprocess.run(["nginx", "-V"], capture_output=True, text=True, timeout=10).stderr
    return "--with-stream " in info + " " and "--with-stream=dynamic" not in info


def ensure_tools(binaries: list[str], want_stream: bool) -> list[str]:
    """Install what is missing; return the binaries that are still unavailable."""
    packages = [APT_PACKAGES[b] for b in binaries if not shutil.which(b)]
    if want_stream and not nginx_has_stream():
        packages.append("libnginx-mod-stream")
    if packages and shutil.which("apt-get"):
        _apt_install(sorted(set(packages)))
    missing = [b for b in binaries if not shutil.which(b)]
    if want_stream and not nginx_has_stream():
        missing.append("nginx-stream-module")
    return missing


def have_matplotlib() -> bool:
    if importlib.util.find_spec("matplotlib") is not None:
        return True
    print("installing: matplotlib (pip)", flush=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"]
    subprocess.run(cmd, capture_output=True, timeout=600)
    importlib.invalidate_caches()
    return importlib.util.find_spec("matplotlib") is not None


def _version(argv: list[str], name: str) -> str:
    """``name`` plus the first version number that ``argv`` prints."""
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    match = re.search(r"\d+\.\d+[\w.+~-]*", out.stdout + out.stderr)
    return f"{name} {match.group(0)}" if match else "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def tunnel_version(repo_root: Path) -> str:
    """Installed package version, else ``__version__`` from the source tree."""
    try:
        return f"tunnel {importlib.metadata.version('tunnel')}"
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        text = (repo_root / "src" / "tunnel" / "__init__.py").read_text()
    except OSError:
        return "tunnel (not found)"
    match = re.search(r"__version__\s*=\s*[\"']([^\"']+)", text)
    return f"tunnel {match.group(1)} (source tree)" if match else "tunnel (source tree)"


def machine_info() -> dict[str, str]:
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "openssl_cli": _version(["openssl", "version"], "OpenSSL"),
        "python_ssl": ssl.OPENSSL_VERSION,
        "python": platform.python_version(),
    }


def tool_versions(repo_root: Path) -> dict[str, str]:
    versions = {
        "hitch": _version(["hitch", "--version"], "hitch"),
        "haproxy": _version(["haproxy", "-v"], "HAProxy"),
        "nginx": _version(["nginx", "-v"], "nginx"),
        "stunnel": _version(["stunnel", "-version"], "stunnel"),
        "wrk": _version(["wrk", "-v"], "wrk"),
        "tunnel": tunnel_version(repo_root),
    }
    return versions


def load_average() -> float:
    """1-minute load average (other work on the machine skews every figure)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0

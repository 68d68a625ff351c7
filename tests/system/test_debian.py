"""The Debian package's configuration (debian/): valid for ``tunnel check``, consistent.

.ci/deb builds, installs and runs the package as root; these checks run anywhere, so a
renamed configuration key or a moved path fails here first.
"""

from __future__ import annotations

import configparser
import getpass
import re
from pathlib import Path

import pytest

from .conftest import REPO, Certs, Launcher

pytestmark = pytest.mark.timeout(60)

DEBIAN = REPO / "debian"
CONFFILE = DEBIAN / "tunnel.ini"


def shipped() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(CONFFILE)
    return parser


def test_the_conffile_passes_tunnel_check_once_a_certificate_exists(
    tunnel: Launcher, tmp_path: Path, certs: Certs
) -> None:
    # Only what needs root or the package's paths changes: the user, the files it
    # writes, the certificate. Every other line is checked as shipped.
    text = CONFFILE.read_text()
    text = text.replace("user = tunnel", f"user = {getpass.getuser()}")
    text = text.replace("/run/tunnel/tunnel.pid", str(tmp_path / "tunnel.pid"))
    text = text.replace("/var/log/tunnel/tunnel.log", str(tmp_path / "tunnel.log"))
    text = text.replace("cert = /etc/tunnel/tunnel.pem", f"cert = {certs.cert_pem}")
    text = text.replace(
        "connect = 127.0.0.1:8080", f"connect = 127.0.0.1:8080\nkey = {certs.key_pem}"
    )
    config = tmp_path / "tunnel.ini"
    config.write_text(text)
    result = tunnel.run("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "listener [web]: accept 0.0.0.0:443 -> connect 127.0.0.1:8080" in result.stdout


def test_logrotate_and_init_script_use_the_conffile_paths() -> None:
    settings = shipped()["tunnel"]
    logrotate = (DEBIAN / "tunnel.logrotate").read_text()
    assert settings["log_target"] == "file"
    assert logrotate.startswith(f"{Path(settings['log_file']).parent}/*.log {{")
    assert f'kill -USR1 "$(cat {settings["pid_file"]})"' in logrotate
    init = (REPO / "contrib" / "tunnel.init").read_text()
    assert f"PIDFILE=${{PIDFILE:-{settings['pid_file']}}}" in init
    postinst = (DEBIAN / "tunnel.postinst").read_text()
    assert f"/var/log/tunnel/{Path(settings['log_file']).name}" in postinst


def test_the_admin_endpoint_is_loopback_and_not_prometheus_port() -> None:
    host, _, port = shipped()["tunnel"]["admin"].rpartition(":")
    assert host == "127.0.0.1"
    assert port != "9090"


def test_packaged_files_exist() -> None:
    for line in (DEBIAN / "tunnel.install").read_text().splitlines():
        source = line.split()[0]
        assert (REPO / source).is_file(), source
    for line in (DEBIAN / "tunnel.manpages").read_text().splitlines():
        assert (REPO / line).is_file(), line
    rules = (DEBIAN / "rules").read_text()
    for name in re.findall(r"debian/tunnel\.(service|socket|init)", rules):
        assert (REPO / "contrib" / f"tunnel.{name}").is_file()

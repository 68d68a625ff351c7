"""`tunnel check` on the keys of passthrough, JA4, groups, pools and shared rates: one bad
value each is an error line naming the file, section and key with what to write, exit 2;
the same keys with good values pass (exit 0)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tunnel.cli.main import main

BACKEND = "[backend:api]\nconnect = 127.0.0.1:8080\n"


def listener(cert: Path, extra: str = "") -> str:
    return (
        f"[web]\naccept = 127.0.0.1:8443\ncert = {cert}\nbackend = api\n"
        f"route = sni:mail.example.com=mail\n{extra}"
    )


MAIL = "[backend:mail]\nconnect = 127.0.0.1:9443\npassthrough = yes\n"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("certs") / "site.pem"
    trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(path))
    return path


def check(path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    path.write_text(text)
    code = main(["check", "-c", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


# (where the bad line goes, the line, the section and key the error must name)
BAD = [
    ("mail", "passthrough = maybe", "backend:mail", "passthrough"),
    ("mail", "tls = yes", "backend:mail", "tls"),  # passthrough with tls
    ("web", "deny_ja4 = t13d1516h2_8daaf6152771", "web", "deny_ja4"),
    ("web", "proxy_ja4_tlv = 0x30", "web", "proxy_ja4_tlv"),
    ("web", "proxy_group_tlv = 0xF0", "web", "proxy_group_tlv"),
    ("web", "proxy_ja4_tlv = 0xE2\nproxy_group_tlv = 0xE2", "web", "proxy_group_tlv"),
    ("api", "balance = random", "backend:api", "balance"),
    ("api", "connect = 127.0.0.1:8080 weight=0", "backend:api", "connect"),
    ("api", "health_check = http", "backend:api", "health_check"),
    ("api", "health_interval = soon", "backend:api", "health_interval"),
    ("web", "max_connection_rate_per_ip = 20/d", "web", "max_connection_rate_per_ip"),
    ("web", "max_handshake_rate_per_ip = 20/s burst 0", "web", "max_handshake_rate_per_ip"),
    ("tunnel", "resolvers = dns.example.com:53", "tunnel", "resolvers"),
    ("tunnel", "max_connection_rate_per_ip = fast", "tunnel", "max_connection_rate_per_ip"),
]


def config(cert: Path, where: str, line: str) -> str:
    tunnel = f"[tunnel]\n{line}\n" if where == "tunnel" else ""
    # The bad line replaces the section's own line of that key, if it has one.
    api = (
        BACKEND.replace("connect = 127.0.0.1:8080\n", "") if line.startswith("connect") else BACKEND
    )
    mail = MAIL.replace("passthrough = yes\n", "") if line.startswith("passthrough") else MAIL
    parts = {
        "api": api + (f"{line}\n" if where == "api" else ""),
        "mail": mail + (f"{line}\n" if where == "mail" else ""),
        "web": listener(cert, f"{line}\n" if where == "web" else ""),
    }
    return tunnel + parts["api"] + parts["mail"] + parts["web"]


@pytest.mark.parametrize(("where", "line", "section", "key"), BAD)
def test_a_bad_value_names_file_section_key_and_exits_2(
    where: str,
    line: str,
    section: str,
    key: str,
    cert: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "t.ini"
    code, out, err = check(path, config(cert, where, line), capsys)
    assert code == 2, (out, err)
    errors = [x for x in err.splitlines() if x.startswith("error: ")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {path}: [{section}] {key}: "), errors[0]
    assert errors[0].endswith(")"), f"no hint on what to write: {errors[0]}"


def test_good_values_of_the_same_keys_pass(
    cert: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = config(cert, "none", "").replace(
        "connect = 127.0.0.1:8080\n",
        "connect = 127.0.0.1:8080 weight=3, 127.0.0.1:8081\nbalance = least-connections\n"
        "health_check = tls\nhealth_interval = 2s\n",
    )
    extra = (
        "deny_ja4 = t13d1516h2_8daaf6152771_e5627efa2ab1\nproxy_protocol = v2\n"
        "proxy_ja4_tlv = 0xE1\nproxy_group_tlv = 0xE2\n"
        "max_connection_rate_per_ip = 20/s burst 40\nmax_handshake_rate_per_ip = 300/m\n"
    )
    text = "[tunnel]\nresolvers = 127.0.0.1:5353\n" + text + extra
    code, out, err = check(tmp_path / "t.ini", text, capsys)
    assert code == 0, err
    assert "key exchange groups" in out

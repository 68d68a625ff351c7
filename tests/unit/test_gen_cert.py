"""gen-cert: names checked before anything is written; the key file is 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from tunnel.cli.main import main
from tunnel.tls.selfsigned import check_name


@pytest.mark.parametrize(
    "name",
    ["localhost", "example.test", "a-b.c0.example", "*.example.test", "127.0.0.1", "::1", "x" * 63],
)
def test_valid_names(name: str) -> None:
    check_name(name)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "not a DNS name"),
        ("exa mple.test", "not a DNS name"),
        ("under_score.test", "not a DNS name"),
        ("-lead.test", "not a DNS name"),
        ("trail-.test", "not a DNS name"),
        ("a..b", "not a DNS name"),
        ("dot.", "not a DNS name"),
        ("x" * 64 + ".test", "not a DNS name"),
        (".".join(["a" * 63] * 4), "not a DNS name"),  # 255 characters
        ("*.test", "not a DNS name"),  # a wildcard over a whole top-level domain
        ("a.*.test", "not a DNS name"),
        ("https://example.test", "not a DNS name"),
        ("1.2.3.256", "looks like an IP address"),
        ("bücher.test", "xn--"),
    ],
)
def test_invalid_names(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace(".", r"\.")):
        check_name(name)


def test_gen_cert_refuses_a_bad_name_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "c.pem"
    code = main(["gen-cert", "--out", str(out), "--name", "ok.test", "--name", "bad name"])
    assert code == 2
    assert "--name: 'bad name' is not a DNS name or IP address" in capsys.readouterr().err
    assert not out.exists()


def test_gen_cert_writes_a_private_file(tmp_path: Path) -> None:
    out = tmp_path / "c.pem"
    old = os.umask(0o022)
    try:
        assert main(["gen-cert", "--out", str(out), "--name", "*.example.test"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(out.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["*.example.test"]

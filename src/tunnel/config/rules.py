"""Checks across keys and sections, once every key has been converted (pure).

Each check reads :class:`~tunnel.config.context.Section` fields (what converted cleanly)
and reports through the :class:`~tunnel.config.context.Context`, so that it also runs on
sections with other errors and ``tunnel check`` lists every problem at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunnel.config.context import BACKEND_PREFIX, TUNNEL_SECTION, Context, Section
from tunnel.config.values import LISTENER_NAME_RE, TLS_VERSIONS


def check_tunnel(tunnel: Section, ctx: Context) -> None:
    """[tunnel]: the log settings fit together, and tls_min <= tls_max."""
    fields = tunnel.fields
    target = fields.get("log_target", "stderr")
    if target == "file" and "log_file" not in fields:
        ctx.error(
            "log_target = file needs a log_file",
            TUNNEL_SECTION,
            "log_file",
            "add e.g. 'log_file = /var/log/tunnel.log'",
        )
    elif target != "file" and "log_file" in fields:
        ctx.error(
            f"log_file is only used with log_target = file (log_target is {target})",
            TUNNEL_SECTION,
            "log_target",
            "set 'log_target = file' or delete the log_file line",
        )
    if target != "syslog" and "log_syslog_address" in fields:
        ctx.error(
            f"log_syslog_address is only used with log_target = syslog (log_target is {target})",
            TUNNEL_SECTION,
            "log_target",
            "set 'log_target = syslog' or delete the log_syslog_address line",
        )
    _check_tls_range(TUNNEL_SECTION, fields, ctx)


def _check_tls_range(section: str, fields: Mapping[str, Any], ctx: Context) -> None:
    low = fields.get("tls_min", TLS_VERSIONS[0])
    high = fields.get("tls_max", TLS_VERSIONS[-1])
    if TLS_VERSIONS.index(low) > TLS_VERSIONS.index(high):
        ctx.error(
            f"tls_min {low} is newer than tls_max {high}",
            section,
            "tls_min",
            "tls_min must be lower than or equal to tls_max",
        )


def check_listener_name(name: str, ctx: Context) -> bool:
    """A listener section's name is usable (else reported, and its keys are not read)."""
    if ":" in name:
        kind = name.split(":", 1)[0]
        ctx.error(
            f"section type {kind!r} is not supported yet",
            name,
            hint="every section except [tunnel] is a listener; name it like [web]",
        )
        return False
    if name.lower() in ("default", TUNNEL_SECTION):
        ctx.error(
            f"[{name}] is not a listener and not the [tunnel] section (names are case-sensitive)",
            name,
            hint="write [tunnel] in lower case for process settings and listener defaults",
        )
        return False
    if not LISTENER_NAME_RE.fullmatch(name):
        ctx.error(
            f"invalid listener name {name!r}",
            name,
            hint="use letters, digits, '-', '_' and '.', starting with a letter or digit",
        )
        return False
    return True


def check_listener(listener: Section, ctx: Context) -> None:
    """One listener's keys fit together; its accept addresses are its own."""
    name, items, fields = listener.name, listener.items, listener.fields
    if "tls_min" in items or "tls_max" in items:  # else [tunnel] reported it already
        _check_tls_range(name, fields, ctx)
    if "key" in fields and len(fields.get("cert", ())) > 1:
        ctx.error(
            "one key cannot serve several certificates",
            name,
            "key",
            "delete the key line and put each key into its cert file (combined PEM)",
        )
    if fields.get("connect") and "backend" in items:
        ctx.error("connect and backend are both set", name, "backend", "keep only one of them")
    for address in fields.get("accept", ()):
        ctx.claim(address, name)
    _check_client_auth(listener, ctx)


def _check_client_auth(listener: Section, ctx: Context) -> None:
    """client_ca, verify, crl and the allow_* lists (client certificates, mTLS)."""
    name, fields = listener.name, listener.fields
    verify = fields.get("verify", "none")
    if verify != "none" and "client_ca" not in fields and "client_ca" not in listener.items:
        ctx.error(
            f"verify = {verify} needs client_ca",
            name,
            "verify",
            "set 'client_ca' to the PEM file of the CA(s) that issue client certificates",
        )
    for key in ("client_ca", "crl", "allow_cn", "allow_dns", "allow_uri"):
        needs = ("required",) if key.startswith("allow") else ("optional", "required")
        if key in fields and verify not in needs:
            ctx.error(
                f"{key} needs verify = {' or '.join(needs)}",
                name,
                key,
                f"set 'verify = required' or delete '{key}'",
            )


def check_backend(backend: Section, ctx: Context) -> None:
    """A [backend:NAME] section: a usable name, and TLS keys only with tls = yes."""
    section, fields = backend.name, backend.fields
    name = section[len(BACKEND_PREFIX) :].strip()
    if not LISTENER_NAME_RE.fullmatch(name):
        ctx.error(
            f"invalid backend name {name!r}",
            section,
            hint="write [backend:NAME] with letters, digits, '-', '_' and '.'",
        )
    tls_keys = sorted(k for k in ("ca", "sni", "cert", "key", "keylog_file") if k in fields)
    if tls_keys and not fields.get("tls"):
        ctx.error(f"{tls_keys[0]} needs tls = yes", section, tls_keys[0], "add 'tls = yes'")
    if "key" in fields and "cert" not in fields:
        ctx.error("key without cert", section, "key", "set 'cert' to the client certificate")
    unix = any(address.kind == "unix" for address in fields.get("connect", ()))
    if fields.get("tls") and fields.get("passthrough"):
        ctx.error(
            "passthrough = yes relays the client's own TLS: tls = yes would wrap it again",
            section,
            "tls",
            "delete 'tls = yes' (the backend terminates the client's TLS itself)",
        )
    if fields.get("tls") and unix and "sni" not in fields:
        ctx.error(
            "a TLS backend on a unix: socket needs sni",
            section,
            "sni",
            "set 'sni' to the name in the backend's certificate",
        )


def check_references(listeners: list[Section], backends: list[Section], ctx: Context) -> None:
    """Every backend a listener names exists (did you mean?); client mode fits its backend."""
    known = sorted(b.name[len(BACKEND_PREFIX) :].strip() for b in backends)
    tls_backends = {b.name[len(BACKEND_PREFIX) :].strip() for b in backends if b.fields.get("tls")}
    passthrough = {
        b.name[len(BACKEND_PREFIX) :].strip() for b in backends if b.fields.get("passthrough")
    }
    for listener in listeners:
        fields = listener.fields
        _check_passthrough(listener, passthrough, ctx)
        if fields.get("client"):
            _check_client_mode(listener, tls_backends, ctx)
        wanted = [("backend", fields["backend"])] if "backend" in fields else []
        wanted += [("route", route.target) for route in fields.get("routes", ())]
        for key, target in wanted:
            if target in known:
                continue
            import difflib  # only when there is a mistake to explain

            close = difflib.get_close_matches(target, known, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else f"add a [backend:{target}] section with a connect key"
            )
            ctx.error(f"unknown backend {target!r}", listener.name, key, hint)


def _check_passthrough(listener: Section, passthrough: set[str], ctx: Context) -> None:
    """Passthrough backends are picked by SNI before any TLS; custom TLV types differ."""
    fields = listener.fields
    for route in fields.get("routes", ()):
        if route.kind == "alpn" and route.target in passthrough:
            ctx.error(
                f"route {route} picks a passthrough backend by ALPN, which is only known "
                "once Tunnel terminates TLS",
                listener.name,
                "route",
                f"route the passthrough backend by name: sni:NAME={route.target}",
            )
    seen: dict[int, str] = {}
    for key in _CUSTOM_TLV_KEYS:
        tlv = fields.get(key, 0)
        if tlv and tlv in seen:
            ctx.error(
                f"{key} and {seen[tlv]} are both 0x{tlv:02X}",
                listener.name,
                key,
                "give each its own type, e.g. proxy_cert_tlv = 0xE0, proxy_ja4_tlv = 0xE1, "
                "proxy_group_tlv = 0xE2",
            )
        seen.setdefault(tlv, key)


# The listener keys that each name a custom PROXY v2 TLV type (they must differ).
_CUSTOM_TLV_KEYS = ("proxy_cert_tlv", "proxy_ja4_tlv", "proxy_group_tlv")


def _check_client_mode(listener: Section, tls_backends: set[str], ctx: Context) -> None:
    """client = yes: plaintext in, so the backend must speak TLS (and no TLS options apply)."""
    name, items, fields = listener.name, listener.items, listener.fields
    if fields.get("backend") not in tls_backends or fields.get("routes"):
        ctx.error(
            "client = yes needs 'backend = NAME' of a [backend:NAME] with tls = yes (no route)",
            name,
            "client",
            "add e.g. [backend:remote] with connect, tls = yes, and set 'backend = remote'",
        )
    for key in ("cert", "cert_dir", "alpn", "client_ca"):
        if key in items:
            ctx.error(
                f"{key} has no effect with client = yes (clients connect in plaintext)",
                name,
                key,
                f"delete '{key}'; set TLS options of the connection in the [backend:NAME]",
            )
    # An alpn list inherited from [tunnel] cannot apply to plaintext clients: ignore it.
    if "alpn" not in items:
        fields.pop("alpn", None)
    # A PROXY header in front of the plaintext would reach the backend as data: refuse.
    if "proxy_from" in items:
        ctx.error(
            "proxy_from does not work with client = yes: a client-mode listener does not "
            "read PROXY headers",
            name,
            "proxy_from",
            "delete 'proxy_from', or terminate TLS on this listener (client = no)",
        )
    elif fields.get("proxy_from"):
        ctx.error(
            "client = yes cannot read the PROXY headers that 'proxy_from' in [tunnel] requires",
            name,
            "client",
            "move proxy_from from [tunnel] into the listeners that terminate TLS",
        )

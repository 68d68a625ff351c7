"""Configuration: .ini text -> frozen dataclasses, every key read as :mod:`.schema` declares.

Public API:

- ``parse_config(text, path="<config>", *, base_dir=None) -> Config`` parses a whole file and
  raises ``ConfigErrors`` listing *every* problem at once (each a ``ConfigError`` naming file,
  section, key and a hint). It never raises anything else and does no I/O: relative paths
  (``cert``, ``key``, ``unix:`` addresses...) are resolved against ``base_dir`` (default: the
  directory part of ``path``) by string work only, after ``~`` expansion.
- ``parse_partial(text, path, *, base_dir=None) -> Parsed``: the same, without raising: the
  sections that parsed cleanly, every error, and the files named by the sections that did
  not (``tunnel check`` looks at those too, to report everything at once).
- ``load_config(path) -> Config`` / ``load_partial(path) -> Parsed`` read the file as UTF-8
  (an unreadable file is a ``ConfigErrors`` with one ``ConfigError``) and parse it with the
  file's absolute directory as ``base_dir``.

File layout: an optional ``[tunnel]`` section (process settings plus listener defaults),
``[backend:NAME]`` sections, and one section per listener, named by the section name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tunnel.config import ini, rules
from tunnel.config.acme import AcmeSettings, check_listener_names
from tunnel.config.context import (
    ACME_SECTION,
    BACKEND_PREFIX,
    TUNNEL_SECTION,
    Context,
    Section,
    default_base_dir,
    kind_of,
)
from tunnel.config.model import (
    BackendConfig,
    Config,
    ConfigValueError,
    ListenerConfig,
    TunnelSettings,
)
from tunnel.config.schema import Key, Kind, Scope, belongs, keys
from tunnel.errors import ConfigError, ConfigErrors


@dataclass(frozen=True, slots=True)
class InputFile:
    """A file a section names that Tunnel will read: ``tunnel check`` tests it exists."""

    section: str
    key: str
    path: str
    directory: bool = False


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one file holds: the sections that parsed cleanly, and every problem.

    ``inputs`` are the files named by sections that had errors (and so were not built):
    the sections that were built have their files checked when they are loaded.
    """

    config: Config
    errors: tuple[ConfigError, ...]
    inputs: tuple[InputFile, ...]


# --------------------------------------------------------------------------- one section


def read_section(
    name: str, kind: Kind, items: dict[str, str], base: dict[str, Any], ctx: Context
) -> Section:
    """Convert every key of one section (``base``: inherited defaults), in file order."""
    schema = keys(kind)
    fields = dict(base)
    for raw, text in items.items():
        key = schema.get(raw)
        if key is None:
            _unknown_key(name, kind, raw, schema, ctx)
        elif not text.strip():
            if not key.required:  # a required one is reported below, as empty
                ctx.error("has no value", name, raw, "give a value or delete the line")
        else:
            try:
                value = key.convert(text)
                fields[key.attr] = ctx.resolve_value(value, key.path) if key.path else value
            except ConfigValueError as exc:
                ctx.value_error(exc, name, raw)
    for key in schema.values():
        if key.required:
            _require(name, key, schema, items, fields, ctx)
    return Section(name, kind, items, fields)


def _unknown_key(name: str, kind: Kind, raw: str, schema: Mapping[str, Key], ctx: Context) -> None:
    where = belongs(raw, kind)
    if where is not None:
        hint = f"{raw!r} belongs in {where}"
    else:
        close = ini.close_match(raw, sorted(schema))
        hint = f"did you mean {close!r}?" if close else "known keys: " + ", ".join(sorted(schema))
    ctx.error(f"unknown key {raw!r}", name, raw, hint)


def _require(
    name: str,
    key: Key,
    schema: Mapping[str, Key],
    items: dict[str, str],
    fields: dict[str, Any],
    ctx: Context,
) -> None:
    """Report a missing or empty required key (unless an alternative key stands in)."""
    if items.get(key.name, "").strip() or (name, key.name) in ctx.mentioned:
        return
    # A present alternative (cert_dir for cert, backend for connect; client = yes) will do.
    alternatives = [k for k in key.instead if k in schema]
    if key.name not in items and any(
        k in items and fields.get(k) is not False for k in alternatives
    ):
        return
    what = "missing" if key.name not in items else "empty"
    hint = f"add e.g. '{key.name} = {key.required}'"
    if alternatives:
        hint += f" or set '{alternatives[0]}'"
    ctx.error(f"required key is {what}", name, key.name, hint)


# --------------------------------------------------------------------------- a whole file


def _read_sections(
    sections: dict[str, dict[str, str]], ctx: Context
) -> tuple[Section, list[Section], list[Section]]:
    """[tunnel], then every backend and listener section (in file order)."""
    tunnel = read_section(TUNNEL_SECTION, "tunnel", sections.pop(TUNNEL_SECTION, {}), {}, ctx)
    rules.check_tunnel(tunnel, ctx)
    inheritable = keys("listener")
    defaults = {k: v for k, v in tunnel.fields.items() if k in inheritable}
    backend_keys = keys("backend")
    listeners: list[Section] = []
    backends: list[Section] = []
    for name, items in sections.items():
        if name.startswith(BACKEND_PREFIX):
            base = {k: v for k, v in defaults.items() if k in backend_keys}
            backends.append(read_section(name, "backend", items, base, ctx))
            rules.check_backend(backends[-1], ctx)
        elif rules.check_listener_name(name, ctx):
            listeners.append(read_section(name, "listener", items, defaults, ctx))
            rules.check_listener(listeners[-1], ctx)
    rules.check_references(listeners, backends, ctx)
    return tunnel, listeners, backends


def _build(
    path: str, tunnel: Section, listeners: list[Section], backends: list[Section], ctx: Context
) -> Config:
    """The dataclasses of every section without errors."""
    settings = TunnelSettings(
        **{k: v for k, v in tunnel.fields.items() if keys("tunnel")[k].scope & Scope.TUNNEL}
    )
    built = []
    for section in listeners:
        if section.name not in ctx.failed:
            required = {"cert": (), "key": None, "connect": ()}
            built.append(ListenerConfig(name=section.name, **{**required, **section.fields}))
    return Config(
        path=path,
        tunnel=settings,
        listeners=tuple(built),
        backends=tuple(
            BackendConfig(name=s.name[len(BACKEND_PREFIX) :].strip(), **s.fields)
            for s in backends
            if s.name not in ctx.failed
        ),
    )


def _inputs(
    tunnel: Section, listeners: list[Section], backends: list[Section], ctx: Context
) -> tuple[InputFile, ...]:
    """The files Tunnel would read, as written in the sections that were not built.

    A file named in [tunnel] is left to the built listeners that inherit it (they check it
    when loaded), so that it is reported once, and at [tunnel] only if none was built.
    """
    inheriting = [s for s in listeners if s.name not in ctx.failed]
    found = []
    for section in [tunnel, *listeners, *backends]:
        if section.name not in ctx.failed and section is not tunnel:
            continue
        for key in keys(section.kind).values():
            value = section.fields.get(key.attr)
            if key.path not in ("read", "dir") or not value or key.name not in section.items:
                continue
            if section is tunnel and any(key.name not in s.items for s in inheriting):
                continue
            paths = value if isinstance(value, tuple) else (value,)
            found += [InputFile(section.name, key.name, p, key.path == "dir") for p in paths]
    return tuple(found)


def _read_acme(sections: dict[str, dict[str, str]], ctx: Context) -> Section | None:
    items = sections.pop(ACME_SECTION, None)
    return None if items is None else read_section(ACME_SECTION, "acme", items, {}, ctx)


def _check_acme(
    acme: Section | None, listeners: list[Section], ctx: Context
) -> AcmeSettings | None:
    """Listeners' acme names need [acme] (and a name's list is the same everywhere)."""
    managed = {s.name: s.fields["acme"] for s in listeners if s.fields.get("acme")}
    for section, message, hint in check_listener_names(managed, has_section=acme is not None):
        ctx.error(message, section, "acme", hint)
    if acme is None or ACME_SECTION in ctx.failed:
        return None
    return AcmeSettings(**acme.fields)


def _with_acme(config: Config, acme: AcmeSettings | None) -> Config:
    """Give [acme] to the config, and its state_dir to each listener with acme names."""
    if acme is None:
        return config
    listeners = tuple(
        replace(listener, acme_state_dir=acme.state_dir) if listener.acme else listener
        for listener in config.listeners
    )
    return replace(config, acme=acme, listeners=listeners)


# --------------------------------------------------------------------------- public entry points


def parse_partial(text: str, path: str = "<config>", *, base_dir: str | None = None) -> Parsed:
    """Parse ``text`` like :func:`parse_config`, but return what is good with every error."""
    ctx = Context(path, base_dir if base_dir is not None else default_base_dir(path))
    sections = ini.read_ini(text.removeprefix("\ufeff"), ctx)
    if sections is None:
        return Parsed(Config(path=path), tuple(ctx.errors), ())
    has_listeners = any(kind_of(name) == "listener" for name in sections)
    acme = _read_acme(sections, ctx)
    tunnel, listeners, backends = _read_sections(sections, ctx)
    acme_settings = _check_acme(acme, listeners, ctx)
    if not has_listeners and not ctx.errors:
        ctx.error(
            "no listener is configured", hint="add a listener section with accept/cert/connect"
        )
    config = _with_acme(_build(path, tunnel, listeners, backends, ctx), acme_settings)
    inputs = _inputs(tunnel, listeners, backends, ctx)
    return Parsed(config, tuple(ctx.errors), inputs)


def parse_config(text: str, path: str = "<config>", *, base_dir: str | None = None) -> Config:
    """Parse configuration ``text`` (named ``path`` in errors) into a ``Config``.

    Relative paths are resolved against ``base_dir`` (default: the directory of ``path``; no
    resolution when ``path`` looks like ``<name>``), after ``~`` expansion. Raises
    ``ConfigErrors`` listing every problem; never raises anything else.
    """
    parsed = parse_partial(text, path, base_dir=base_dir)
    if parsed.errors:
        raise ConfigErrors(list(parsed.errors))
    return parsed.config


def load_partial(path: str) -> Parsed:
    """Read the UTF-8 file at ``path`` and parse it with :func:`parse_partial`.

    A missing, unreadable or non-UTF-8 file raises ``ConfigErrors`` naming the file.
    """
    try:
        with open(path, encoding="utf-8-sig") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise _file_error(path, "file not found", "check the path or create the file") from None
    except UnicodeDecodeError as exc:
        raise _file_error(
            path, f"not valid UTF-8 at byte {exc.start}", "save the file as UTF-8"
        ) from None
    except OSError as exc:
        raise _file_error(
            path, f"cannot read the file: {exc.strerror or exc}", "check the path and permissions"
        ) from None
    return parse_partial(text, path, base_dir=os.path.dirname(os.path.abspath(path)))


def load_config(path: str) -> Config:
    """Read the UTF-8 file at ``path`` and parse it with ``parse_config``.

    Relative paths inside are resolved against the file's directory. A missing, unreadable or
    non-UTF-8 file, or any problem in it, raises ``ConfigErrors``.
    """
    parsed = load_partial(path)
    if parsed.errors:
        raise ConfigErrors(list(parsed.errors))
    return parsed.config


def missing_inputs(parsed: Parsed) -> list[ConfigError]:
    """A located error for each input file of ``parsed.inputs`` that cannot be read."""
    errors = []
    for item in parsed.inputs:
        kind = "directory" if item.directory else "file"
        if not os.path.exists(item.path):
            message = f"{kind} {item.path} does not exist"
        elif not os.access(item.path, os.R_OK | (os.X_OK if item.directory else 0)):
            message = f"{kind} {item.path} is not readable"
        else:
            continue
        hint = "check the path and permissions"
        errors.append(
            ConfigError(
                message, file=parsed.config.path, section=item.section, key=item.key, hint=hint
            )
        )
    return errors


def _file_error(path: str, message: str, hint: str) -> ConfigErrors:
    return ConfigErrors([ConfigError(message, file=path, hint=hint)])

"""Can the ``user``/``group`` Tunnel drops to read the files it needs after the drop?

The configuration file, certificates, keys, CAs and CRLs are read as root at start, but a
reload reads them again in the supervisor after privileges were dropped, and workers
re-read a ``ticket_key_file`` every few seconds. A file only root can read therefore works
at start and breaks the first reload. ``tunnel check`` warns about such files and
``tunnel run`` refuses to start.

The decision (:func:`first_denial`) is pure: it gets stat facts of every directory on the
way to a file and of the file itself, and applies the owner/group/other permission bits
the way the kernel does. The shell (:func:`problems`) does the ``stat`` calls. It only
reports what it is sure of: a path that cannot be inspected (missing, or hidden from the
user running ``check``) is left to the checks that read the files, and a file or
directory with a POSIX ACL is given the benefit of the doubt, since its bits do not tell.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from tunnel.config import Config
from tunnel.errors import ConfigError, ConfigErrors
from tunnel.process.privileges import Identity
from tunnel.tls.certs import CERT_DIR_SUFFIXES

READ = 0o4
SEARCH = 0o1  # execute on a directory: may pass through it
ACL_XATTR = "system.posix_acl_access"


@dataclass(frozen=True, slots=True)
class Node:
    """What permission checks need of one path: owner, group, mode bits, kind, ACL."""

    path: str
    uid: int
    gid: int
    mode: int
    is_dir: bool = False
    acl: bool = False


@dataclass(frozen=True, slots=True)
class Who:
    """The identity after the drop: uid and every group it is a member of."""

    uid: int
    gids: frozenset[int]


@dataclass(frozen=True, slots=True)
class Need:
    """A path Tunnel reads after the drop, and the config key that named it (None for the
    configuration file itself)."""

    section: str | None
    key: str | None
    path: str
    want: int = READ  # READ for a file; READ | SEARCH for a directory that is listed
    when: str = "a reload reads it again as that user"


@dataclass(frozen=True, slots=True)
class Denial:
    """The path on the way that stops the user, and the permission it lacks there."""

    node: Node
    want: int
    target: bool = True  # False: a directory on the way


def allowed(node: Node, who: Who, want: int) -> bool:
    """The kernel's rule: exactly one class of bits applies, owner before group before
    other (an owner without ``u+r`` is refused even if the group may read)."""
    if who.uid == 0 or node.acl:
        return True
    if node.uid == who.uid:
        bits = node.mode >> 6
    elif node.gid in who.gids:
        bits = node.mode >> 3
    else:
        bits = node.mode
    return bits & want == want


def first_denial(chain: Sequence[Node], who: Who, want: int) -> Denial | None:
    """Where ``who`` is stopped reaching the last node of ``chain`` (its directories from
    ``/`` down, then the target itself) with permission ``want``; None if it is not."""
    *directories, target = chain
    for node in directories:
        if not allowed(node, who, SEARCH):
            return Denial(node, SEARCH, target=False)
    return None if allowed(target, who, want) else Denial(target, want)


def ancestors(path: str) -> list[str]:
    """The directories passed through to reach an absolute, normalised ``path``."""
    found = []
    parent = os.path.dirname(path)
    while True:
        found.append(parent)
        if parent == os.path.dirname(parent):
            return found[::-1]
        parent = os.path.dirname(parent)


def _bits(want: int) -> str:
    return ("r" if want & READ else "") + ("x" if want & SEARCH else "")


def fix(denial: Denial, who: Who, group: str) -> str:
    """The command that lets ``who`` through, changing as little as possible."""
    import shlex  # only when a file is out of reach, to say how to fix it

    node, bits, path = denial.node, _bits(denial.want), shlex.quote(denial.node.path)
    if node.uid == who.uid:
        return f"chmod u+{bits} {path}"
    if node.gid in who.gids:
        return f"chmod g+{bits} {path}"
    return f"chgrp {shlex.quote(group)} {path} && chmod g+{bits} {path}"


def describe(need: Need, denial: Denial, user: str) -> str:
    """The message: which file, whom, what stops them, and why it matters."""
    node = denial.node
    if not denial.target:
        cause = f"its directory {node.path} is not searchable (x) by {user}"
    elif node.is_dir:
        cause = f"the directory is not listable (r and x) by {user}"
    else:
        cause = f"it is not readable by {user}"
    return (
        f"{need.path}: {cause}, whom Tunnel runs as after dropping privileges; "
        f"{need.when} and would fail"
    )


# --------------------------------------------------------------------------- shell


def needs(config: Config) -> list[Need]:
    """Every file (and ``cert_dir``) Tunnel reads after the drop, the configuration first."""
    found: list[Need] = []
    if not config.path.startswith("<"):  # "<string>": not read from a file
        found.append(Need(None, None, config.path))
    for listener in config.listeners:
        section = listener.name
        found += [Need(section, "cert", path) for path in listener.cert]
        if listener.key is not None:
            found.append(Need(section, "key", listener.key))
        if listener.cert_dir is not None:
            found.append(Need(section, "cert_dir", listener.cert_dir, READ | SEARCH))
            found += [Need(section, "cert_dir", p) for p in _dir_files(listener.cert_dir)]
        found += [Need(section, "client_ca", path) for path in listener.client_ca]
        found += [Need(section, "crl", path) for path in listener.crl]
        if listener.ticket_key_file is not None:
            when = "workers re-read it as that user every few seconds"
            found.append(Need(section, "ticket_key_file", listener.ticket_key_file, when=when))
    for backend in config.backends:
        section = f"backend:{backend.name}"
        for key, path in (("ca", backend.ca), ("cert", backend.cert), ("key", backend.key)):
            if path is not None:
                found.append(Need(section, key, path))
    return found


def _dir_files(directory: str) -> list[str]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError:
        return []  # reported by the certificate checks
    return [
        os.path.join(directory, entry)
        for entry in entries
        if entry.endswith(CERT_DIR_SUFFIXES) and not entry.startswith(".")
    ]


def _has_acl(path: str) -> bool:
    try:
        return ACL_XATTR in os.listxattr(path)
    except OSError as exc:
        # No xattr support means no ACL; anything else: assume one rather than misreport.
        return exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP)


def _node(path: str) -> Node:
    facts = os.stat(path)
    is_dir = stat.S_ISDIR(facts.st_mode)
    return Node(path, facts.st_uid, facts.st_gid, facts.st_mode, is_dir, _has_acl(path))


def _chain(path: str) -> list[Node]:
    """Stat facts of every directory on the way (by name and by real location), then of
    the file. OSError if any cannot be inspected."""
    by_name, real = os.path.abspath(path), os.path.realpath(path)
    directories = list(dict.fromkeys(ancestors(by_name) + ancestors(real)))
    return [_node(d) for d in directories] + [_node(real)]


def _who(identity: Identity) -> tuple[Who, str, str]:
    """The identity's groups (as ``drop`` sets them), its name, and its group's name."""
    try:
        group = grp.getgrgid(identity.gid).gr_name
    except KeyError:
        group = str(identity.gid)
    if identity.user is not None:
        gids = frozenset(os.getgrouplist(identity.user, identity.gid))
        user = identity.user
    else:
        gids = frozenset([identity.gid])
        try:
            user = pwd.getpwuid(identity.uid).pw_name
        except KeyError:
            user = f"uid {identity.uid}"
    return Who(identity.uid, gids), f"user {user} (group {group})", group


def problems(config: Config, identity: Identity | None) -> list[ConfigError]:
    """One error per needed file that the dropped-to identity cannot read."""
    if identity is None or identity.uid == 0:
        return []  # no drop, or root: every file readable at start stays readable
    who, user, group = _who(identity)
    errors = []
    for need in needs(config):
        try:
            denial = first_denial(_chain(need.path), who, need.want)
        except OSError:
            continue  # missing or hidden from us: the certificate checks report it
        if denial is not None:
            errors.append(
                ConfigError(
                    describe(need, denial, user),
                    file=config.path,
                    section=need.section,
                    key=need.key,
                    hint=f"run: {fix(denial, who, group)}",
                )
            )
    return errors


def require(config: Config, identity: Identity | None) -> None:
    """Raise ConfigErrors naming every needed file the identity cannot read (for run)."""
    errors = problems(config, identity)
    if errors:
        raise ConfigErrors(errors)


def warnings(config: Config, identity: Identity | None) -> list[str]:
    """The same problems as lines for ``tunnel check``."""
    refused = "'tunnel run' would refuse to start"
    return [f"WARN: {error} -- {refused}" for error in problems(config, identity)]

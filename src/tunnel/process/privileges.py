"""Dropping root privileges after binding (``user``/``group``), and refusing root.

Names are looked up (:func:`resolve`) while the configuration is checked, so a typo is a
configuration error at start; the switch itself (:func:`drop`) happens in the supervisor
after every socket is bound and every certificate read, before any worker exists.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

from tunnel.config import Config
from tunnel.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Identity:
    """Whom to become: user name (for supplementary groups), uid and gid."""

    user: str | None
    uid: int
    gid: int


def _error(config: Config, key: str, message: str, hint: str) -> ConfigError:
    return ConfigError(message, file=config.path, section="tunnel", key=key, hint=hint)


def resolve(config: Config) -> Identity | None:
    """The identity to switch to, or None when neither ``user`` nor ``group`` is set."""
    settings = config.tunnel
    if settings.user is None and settings.group is None:
        return None
    uid, gid, name = os.getuid(), os.getgid(), None
    if settings.user is not None:
        try:
            entry = pwd.getpwnam(settings.user)
        except KeyError:
            raise _error(
                config, "user", f"no such user {settings.user!r}", "create it or fix the name"
            ) from None
        uid, gid, name = entry.pw_uid, entry.pw_gid, entry.pw_name
    if settings.group is not None:
        try:
            gid = grp.getgrnam(settings.group).gr_gid
        except KeyError:
            raise _error(
                config, "group", f"no such group {settings.group!r}", "create it or fix the name"
            ) from None
    return Identity(name, uid, gid)


def check_root(config: Config, identity: Identity | None) -> None:
    """Refuse to serve as root unless ``allow_root = yes``."""
    ends_as_root = identity.uid == 0 if identity is not None else os.geteuid() == 0
    if ends_as_root and not config.tunnel.allow_root:
        raise _error(
            config,
            "user",
            "refusing to serve as root",
            "set 'user = SOME_USER' (privileges are dropped after binding) or 'allow_root = yes'",
        )


def drop(identity: Identity) -> None:
    """Become ``identity``: supplementary groups, then gid, then uid (in that order, since
    after setuid nothing else may be changed). Raises OSError if not permitted."""
    if os.getuid() == identity.uid and os.getgid() == identity.gid:
        return
    if identity.user is not None:
        os.initgroups(identity.user, identity.gid)
    else:
        os.setgroups([identity.gid])
    os.setgid(identity.gid)
    os.setuid(identity.uid)
    if identity.uid != 0 and (os.geteuid() == 0 or os.getuid() == 0):
        raise OSError("still root after setuid")

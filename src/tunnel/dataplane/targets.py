"""Where a listener's connections go: its route table of backends, and their PROXY options."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from tunnel.config import BackendConfig, ListenerConfig
from tunnel.config.routing import RouteTable, build_route_table
from tunnel.dataplane.pool import Pool
from tunnel.wire.proxy_out import ProxyOptions


@dataclass(frozen=True, slots=True)
class Target:
    """Where a connection goes: a backend's pool of addresses, and the PROXY header it gets."""

    backend: BackendConfig
    proxy: ProxyOptions | None
    pool: Pool
    tls: ssl.SSLContext | None = None  # the backend is reached over TLS with this context

    @property
    def passthrough(self) -> bool:
        """The client's TLS goes to this backend untouched (chosen by SNI, before TLS)."""
        return self.backend.passthrough


class PoolSource(Protocol):
    """Where targets get their pools (one per backend, shared by a worker's listeners)."""

    def pool(self, key: str, backend: BackendConfig) -> Pool: ...


def listener_routes(
    config: ListenerConfig,
    backends: Mapping[str, BackendConfig],
    backend_tls: Mapping[str, ssl.SSLContext],
    pools: PoolSource,
) -> tuple[RouteTable[Target], list[Pool]]:
    """The listener's route table; its own ``connect`` (or ``backend``) is the fallback.

    A ``[backend:NAME]`` decides whether (and which version of) a PROXY header it gets;
    the other PROXY options (CRC32C, unique ID, ...) are the listener's. ``backend_tls``
    holds the context of each backend with ``tls = yes``. Also returns the pools the
    listener can use (the default's, and those its routes name).
    """
    targets = {
        name: Target(
            backend,
            proxy_options(config, backend.proxy_protocol),
            pools.pool(name, backend),
            backend_tls.get(name),
        )
        for name, backend in backends.items()
    }
    if config.backend is not None:
        default = targets[config.backend]
    else:
        own = BackendConfig(
            config.name, config.connect, config.connect_timeout, config.proxy_protocol
        )
        own_pool = pools.pool(f"listener:{config.name}", own)
        default = Target(own, proxy_options(config, config.proxy_protocol), own_pool)
    used = [default.pool, *(targets[route.target].pool for route in config.routes)]
    return build_route_table(config.routes, targets, default), list(dict.fromkeys(used))


def proxy_options(cfg: ListenerConfig, version: str) -> ProxyOptions | None:
    """The listener's PROXY-out settings for ``version``, or None when it is off."""
    if version == "off":
        return None
    return ProxyOptions(
        version=version,
        crc32c=cfg.proxy_crc32c,
        unique_id=cfg.proxy_unique_id,
        cert_tlv=cfg.proxy_cert_tlv,
        keep_tlvs=cfg.proxy_keep_tlvs,
        ja4_tlv=cfg.proxy_ja4_tlv,
        group_tlv=cfg.proxy_group_tlv,
    )


def any_passthrough(routes: RouteTable[Target]) -> bool:
    """Whether an SNI route (or the default) leads to a passthrough backend."""
    sni = routes.sni
    targets = (routes.default, *sni.exact.values(), *sni.wildcard.values())
    return any(target.passthrough for target in targets)

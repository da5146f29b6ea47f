"""Server settings: one value object shared by the router and the transports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

#: An auth hook: ``hook(request: AuthRequest)`` -> bool | dict | Deferred | coroutine.
AuthHook = Callable[..., Any]
#: A join hook: ``hook(peer: dict, room: str)`` -> bool | Deferred | coroutine.
JoinHook = Callable[[dict, str], Any]


@dataclass
class Settings:
    """Every knob of the server, with the defaults of docs/spec.md §7."""

    authentication: bool = False
    dynamic_rooms: bool = True
    #: Seconds to extend ``symple:session:<token>`` on each auth; 0 leaves it.
    session_ttl: int = 0
    redis_url: Optional[str] = None
    #: PEM file of the CAs that sign the Redis server's certificate (``rediss://``);
    #: None: the system's trust store (or the URL's ``ssl_ca_certs``).
    redis_ca: Optional[str] = None
    key_prefix: str = "symple:"
    auth_hook: Optional[AuthHook] = None
    join_hook: Optional[JoinHook] = None
    #: Seconds an auth or join hook may take before the peer is answered with
    #: 504 (join) or closed with 4504 (auth); 0 waits for ever.
    hook_timeout: float = 5.0
    #: Largest accepted frame: 128 KiB, so a message with a 64 KiB string body
    #: (about 66 KB as JSON, more with escapes) passes, as on the reference.
    max_message_size: int = 128 * 1024
    #: Frames one client (address, user) may send per ``rate_period``.
    rate_limit: int = 1000
    rate_period: float = 10.0
    #: Deliveries (recipients of its routed frames) one client may cause per
    #: ``rate_period``: a frame to a 500-member room costs 500; 0: no limit.
    delivery_limit: int = 50_000
    max_connections: int = 10_000
    max_send_buffer: int = 1024 * 1024
    #: Named rooms one session may be in (auth, stored session and joins together).
    max_rooms: int = 100
    #: Largest presence ``data`` a client may have stored (serialized bytes).
    max_presence_size: int = 8 * 1024
    auth_timeout: float = 10.0
    ping_interval: float = 25.0
    ping_timeout: float = 10.0
    allowed_origins: tuple[str, ...] = ()
    trust_proxy: bool = False
    #: With ``trust_proxy``: the proxies in front of the server that append to
    #: X-Forwarded-For; the address taken is this many entries from the right.
    proxy_hops: int = 1
    #: Unauthenticated connections one client address may hold at once; 0: no cap.
    max_unauthenticated_per_address: int = 100
    #: Connections one client address may hold at once, authenticated or not; 0: no cap.
    max_connections_per_address: int = 1000
    #: New connections one client address may open per 10 s (token bucket); 0: no cap.
    address_connection_rate: int = 200
    #: Networks whose addresses the per-address budgets do not count.
    budget_exempt: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    demo: bool = True
    drain_timeout: float = 10.0
    #: Seconds after which a silent cluster process's sessions go offline:
    #: 4 s, so a crash is announced within 5 s; heartbeats every 0.5 s.
    node_timeout: float = 4.0
    #: Prefix of the cluster's own channels and keys; None: ``<key_prefix>cluster:``.
    #: Processes with different values on one Redis form separate clusters.
    cluster_prefix: Optional[str] = None
    extra: dict = field(default_factory=dict)

    def origin_allowed(self, origin: Optional[str]) -> bool:
        """Browsers always send ``Origin``; the list guards against cross-site pages.

        A handshake without one comes from a native client (which could send any
        Origin it liked), so it passes, as CORS-style checks elsewhere let it.
        """
        if not self.allowed_origins or "*" in self.allowed_origins or origin is None:
            return True
        return origin in self.allowed_origins

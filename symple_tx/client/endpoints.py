"""From a ``ws://`` / ``wss://`` URL to the endpoint a client connects with."""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlsplit

from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS

from ..endpoints import load_trust_root, tcp_endpoint


def parse_url(url: str) -> tuple[str, int, bool]:
    """``(host, port, secure)`` of a ``ws://`` or ``wss://`` URL, or a clear ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"Invalid server URL {url!r}: expected ws://host[:port]/ or wss://...")
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        raise ValueError(f"Invalid server URL {url!r}: bad port") from None
    return parts.hostname, port, secure


def client_endpoint(reactor: Any, url: str, ca_file: Optional[str] = None,
                    verify: bool = True, timeout: float = 10.0) -> Any:
    """The TCP (or TLS) endpoint for a ``ws://`` / ``wss://`` URL."""
    host, port, secure = parse_url(url)
    endpoint = tcp_endpoint(reactor, host, port, timeout)
    if not secure:
        return endpoint
    if verify:
        trust = load_trust_root(ca_file) if ca_file else ssl.platformTrust()
        creator = ssl.optionsForClientTLS(host, trustRoot=trust)
    else:
        creator = ssl.CertificateOptions(verify=False)
    return wrapClientTLS(creator, endpoint)

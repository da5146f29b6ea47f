"""Where Redis is: a URL parsed once, with one clear line for anything unusable.

``SCHEMES`` maps a URL scheme to the function that parses it, so a new kind of
address (``redis+sentinel://``, say) is one entry here and a ``RedisAddress``
subclass with its own ``stream_endpoint``; no caller changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Optional
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from twisted.internet.endpoints import UNIXClientEndpoint

from ..endpoints import tcp_endpoint

DEFAULT_PORT = 6379
#: Query parameters a URL may carry (redis-py spells the CA file this way).
QUERY_OPTIONS = ("db", "ssl_ca_certs")


@dataclass(frozen=True)
class RedisAddress:
    """One Redis server: where it is, how to log in, whether (and how) TLS verifies it."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    db: int = 0
    password: Optional[str] = None
    username: Optional[str] = None
    tls: bool = False
    unix_path: Optional[str] = None
    #: PEM file of the CAs that may sign the server's certificate; None: the
    #: system's trust store.  Only with ``tls``.
    ca_file: Optional[str] = None

    @classmethod
    def parse(cls, url: str, ca_file: Optional[str] = None) -> "RedisAddress":
        """Raise ValueError with one clear line for anything unusable.

        ``ca_file`` (``--redis-ca``) wins over the URL's ``ssl_ca_certs``.
        """
        return parse(url, ca_file)

    def __str__(self) -> str:
        """How logs and errors name it: never the password."""
        if self.unix_path:
            return f"unix:{self.unix_path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" + (" (TLS)" if self.tls else "")

    def stream_endpoint(self, reactor: Any, timeout: float) -> Any:
        """The plain stream to the server (an ``IStreamClientEndpoint``);
        ``connect.endpoint`` adds verified TLS."""
        if self.unix_path:
            return UNIXClientEndpoint(reactor, self.unix_path, timeout=timeout)
        return tcp_endpoint(reactor, self.host, self.port, timeout)

    @property
    def tls_hostname(self) -> str:
        """The name (or IP address) the server's certificate must carry."""
        return self.host


def parse(url: str, ca_file: Optional[str] = None) -> RedisAddress:
    """The address for ``url``, through the parser its scheme registered in ``SCHEMES``."""
    if not isinstance(url, str) or not url:
        raise ValueError("the Redis URL is empty")
    parts = urlsplit(url)
    parser = SCHEMES.get(parts.scheme)
    if parser is None:
        known = ", ".join(f"{s}://" if s != "unix" else "unix:" for s in SCHEMES)
        raise ValueError(f"Redis URL {_safe(url)!r} must start with {known}")
    address = parser(url, parts)
    if ca_file is not None:
        address = replace(address, ca_file=ca_file)
    if address.ca_file is not None and not address.tls:
        raise ValueError(f"Redis URL {_safe(url)!r}: a CA file needs rediss:// (TLS)")
    return address


def _tcp(url: str, parts: SplitResult, tls: bool = False) -> RedisAddress:
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"Redis URL {_safe(url)!r} has an invalid port") from None
    query = _query(url, parts)
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"Redis URL {_safe(url)!r}: the database must be a number")
    return RedisAddress(host=parts.hostname or "127.0.0.1", port=port,
                        db=int(path) if path else _db(url, query),
                        password=_password(parts),
                        username=unquote(parts.username) if parts.username else None,
                        tls=tls, ca_file=query.get("ssl_ca_certs"))


def _tls(url: str, parts: SplitResult) -> RedisAddress:
    return _tcp(url, parts, tls=True)


def _unix(url: str, parts: SplitResult) -> RedisAddress:
    path = parts.path or parts.netloc
    if not path:
        raise ValueError(f"Redis URL {_safe(url)!r} has no socket path")
    query = _query(url, parts)
    if "ssl_ca_certs" in query:
        raise ValueError(f"Redis URL {_safe(url)!r}: a CA file needs rediss:// (TLS)")
    return RedisAddress(unix_path=path, db=_db(url, query), password=_password(parts))


#: URL scheme -> parser(url, parts) returning the address.
SCHEMES: dict[str, Callable[[str, SplitResult], RedisAddress]] = {
    "redis": _tcp,
    "rediss": _tls,
    "unix": _unix,
}


def _query(url: str, parts: SplitResult) -> dict[str, str]:
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(QUERY_OPTIONS))
    if unknown:
        raise ValueError(f"Redis URL {_safe(url)!r}: unknown option {unknown[0]!r} "
                         f"(known: {', '.join(QUERY_OPTIONS)})")
    return options


def _db(url: str, query: dict[str, str]) -> int:
    value = query.get("db", "0") or "0"
    if not value.isdigit():
        raise ValueError(f"Redis URL {_safe(url)!r}: the database must be a number")
    return int(value)


def _password(parts: SplitResult) -> Optional[str]:
    return unquote(parts.password) if parts.password else None


def _safe(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()
    return url

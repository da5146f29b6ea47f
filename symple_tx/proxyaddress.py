"""The client's address, and when a reverse proxy may tell it.

``X-Forwarded-For`` is a list that each proxy *appends* to: whatever a
client sends itself comes first, and only the entries the operator's own
proxies added can be believed.  The address to take is therefore the one
the outermost trusted proxy saw: the ``hops``-th entry from the right, where
``hops`` is the number of proxies in front of the server (``--proxy-hops``,
1 by default).  Taking the first entry, as many servers do, lets any client
behind an appending proxy (nginx's ``$proxy_add_x_forwarded_for``, HAProxy's
``option forwardfor``) choose its address, and so escape the per-address
budgets and forge its ``host``.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Mapping, Optional

from twisted.logger import Logger

log = Logger()
#: Whether an unbelievable proxy header was logged: once per process is enough
#: to show a misconfigured proxy, and a client cannot fill the log with them.
_warned = False

#: The host of a peer whose address is unknown (a UNIX socket).
LOCAL = "local"


def client_host(headers: Mapping[str, str], peer: Any, trust_proxy: bool,
                hops: int = 1) -> str:
    """The remote address; proxy headers count only when the operator trusts them.

    ``headers`` are lower-case names with repeated fields joined by ``", "``
    (RFC 9110 §5.3, as Autobahn and ``web.head_fields`` parse them).  A
    forwarded value that is not an IP address, or a list shorter than
    ``hops``, is not believed: the connection's own address counts instead.
    """
    own = getattr(peer, "host", None) or LOCAL
    if not trust_proxy:
        return own
    forwarded = headers.get("x-forwarded-for")
    if forwarded is not None:
        entries = [entry.strip() for entry in forwarded.split(",")]
        found = _ip(entries[-hops]) if len(entries) >= hops else None
        if found is None:
            _warn_once("Ignoring X-Forwarded-For {value!r} from {peer}: expected at least "
                       "{hops} address(es) added by trusted proxies (--proxy-hops); "
                       "further ones are not logged", value=forwarded[:200], peer=own,
                       hops=hops)
            return own
        return found
    real_ip = headers.get("x-real-ip")
    if real_ip is not None:
        found = _ip(real_ip.strip())
        if found is None:
            _warn_once("Ignoring X-Real-IP {value!r} from {peer}: not an IP address; "
                       "further ones are not logged", value=real_ip[:200], peer=own)
            return own
        return found
    return own


def _warn_once(text: str, **fields: Any) -> None:
    global _warned
    if not _warned:
        _warned = True
        log.warn(text, **fields)


def _ip(text: str) -> Optional[str]:
    """``text`` as an IP address (``[v6]:port`` and ``v4:port`` forms accepted), or None."""
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None

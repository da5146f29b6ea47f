"""A Symple v4 client for Twisted, with the capabilities of ``symple-client`` 4.x.

``SympleClient`` connects over ``ws://`` or ``wss://`` (certificates verified
by default), authenticates, keeps a roster of the peers it sees from presence,
announces capabilities, and reconnects with exponential backoff and jitter
through Twisted's ``ClientService``.  After a reconnect it joins again the
rooms it had joined and rebuilds its roster from the server's snapshot.

Like the JavaScript client it gives up, instead of retrying, when the very
first connection fails, when the server rejects its credentials, and when the
application disconnects on purpose.  Scripts without a running reactor use
``run(main)``.

The package by job: ``events`` (the emitter), ``errors``, ``endpoints`` (URLs,
TCP/TLS), ``backoff`` (retry delays), ``protocol`` (the Autobahn connection),
``peer`` (``SympleClient``, the state machine) and ``script`` (``run``).  It
loads nothing of the server: no router, no metrics, no server transport.
"""

from ..endpoints import load_trust_root, tcp_endpoint
from .backoff import backoff
from .endpoints import client_endpoint, parse_url
from .errors import REJECTED, AuthError, ClientError, ConnectError, NotConnected
from .events import EVENTS, Events, FrameMatch, frame_matches
from .peer import SYNC_SUBTYPE, SympleClient, new_frame_id
from .protocol import SympleClientFactory, SympleClientProtocol
from .script import run

__all__ = [
    "EVENTS", "REJECTED", "SYNC_SUBTYPE", "AuthError", "ClientError", "ConnectError", "Events",
    "FrameMatch", "NotConnected", "SympleClient", "SympleClientFactory", "SympleClientProtocol",
    "backoff", "client_endpoint", "frame_matches", "load_trust_root", "new_frame_id",
    "parse_url", "run", "tcp_endpoint",
]

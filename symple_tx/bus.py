"""The seam between the router and other server processes.

The router reports every change of its own sessions (open, close, join,
leave, presence data) and hands over the routed frames that have recipients
on other processes, or are addressed to a ``user|id`` it does not know.
``Bus`` is the single-process default: there are no other processes, so
every call is a no-op.  ``symple_tx.cluster`` implements it over Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from twisted.internet.defer import Deferred, succeed

if TYPE_CHECKING:
    from .router import Router
    from .session import Session


class Bus:
    """No other processes: nothing to tell, nothing to forward."""

    def attach(self, router: "Router") -> None:
        """The router this bus serves (``Router`` calls it from its constructor)."""

    def opened(self, session: "Session") -> None:
        """A local session was admitted (after its welcome and snapshot)."""

    def closed(self, session: "Session") -> None:
        """A local session is gone."""

    def joined(self, session: "Session", room: str) -> None:
        """A local session joined ``room``."""

    def left(self, session: "Session", room: str) -> None:
        """A local session left ``room``."""

    def presence(self, session: "Session") -> None:
        """A local session stored new presence data."""

    def forward(self, recipients: dict[str, list[str]], payload: bytes, kind: str) -> None:
        """Deliver ``payload`` to sessions of other processes: node id -> session ids."""

    def forward_direct(self, sender: "Session", user: str, session_id: str, payload: bytes,
                       kind: str) -> bool:
        """Hand a frame for ``user|session_id``, a session this process does not
        know, to whichever other process holds it; False when none could.

        A process knows only the sessions sharing a room with its own, and a
        room's other members only a round trip after its first member entered
        it; the holder checks the shared room.  An implementation that
        forwards charges the sender for one delivery first (``Router.charge``).
        """
        return False

    def remote_sessions(self) -> int:
        """How many sessions of other processes the router mirrors."""
        return 0

    def start(self) -> None:
        """Connect; called when the server starts."""

    def stop(self) -> Deferred:
        """Say goodbye (the cluster announces our sessions offline) and disconnect."""
        return succeed(None)

    def problem(self) -> Optional[str]:
        """Why the bus cannot reach the other processes right now, or None."""
        return None

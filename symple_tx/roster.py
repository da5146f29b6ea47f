"""The roster: the peers a client sees, kept from presence frames.

Pure logic, no I/O.  It applies presence the way ``symple-client`` 4.x does
(online adds or updates, offline removes, keyed by ``data.id``), so with the
server's visibility rule (docs/spec.md §5) it always equals the set of
sessions the client shares a room with.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Union

from . import wire

#: A peer predicate: a user name, a ``user|id`` address, or a callable.
PeerMatch = Union[str, Callable[[dict], bool]]


def peer_matches(peer: dict, match: PeerMatch) -> bool:
    """Whether ``peer`` is the user name, the ``user|id`` address or passes the predicate."""
    if callable(match):
        return bool(match(peer))
    user, bar, peer_id = match.partition("|")
    if bar:
        return peer.get("user") == user and peer.get("id") == peer_id
    return peer.get("user") == match


class Roster:
    """Visible peers by session id; ``apply`` reports what a presence changed."""

    def __init__(self, own_id: Optional[str] = None) -> None:
        self.own_id = own_id
        self.peers: dict[str, dict[str, Any]] = {}

    def apply(self, frame: dict) -> Optional[tuple[str, dict]]:
        """Apply one presence frame; returns ``("add"|"update"|"remove", peer)`` or None."""
        data = frame.get("data")
        if not isinstance(data, dict):
            return None
        peer_id, user = data.get("id"), data.get("user")
        if not isinstance(peer_id, str) or not peer_id or not isinstance(user, str) or not user:
            return None
        if peer_id == self.own_id:
            return None
        if data.get("online"):
            change = "update" if peer_id in self.peers else "add"
            self.peers[peer_id] = data
            return change, data
        removed = self.peers.pop(peer_id, None)
        if removed is None:
            return None
        return "remove", {**removed, **data}

    def clear(self) -> list[dict]:
        """Forget everyone (the connection is gone); returns who was removed."""
        gone = list(self.peers.values())
        self.peers.clear()
        return gone

    def get(self, peer: str) -> Optional[dict]:
        """A peer by session id or by ``user|id`` address."""
        user, bar, peer_id = peer.partition("|")
        found = self.peers.get(peer_id if bar else peer)
        if found is not None and bar and found.get("user") != user:
            return None
        return found

    def find(self, match: PeerMatch) -> list[dict]:
        """Peers that match a user name, an address or a predicate."""
        return [p for p in self.peers.values() if peer_matches(p, match)]

    def addresses(self) -> list[str]:
        return sorted(wire.address(p["user"], p["id"]) for p in self.peers.values())

    def users(self) -> list[str]:
        return sorted({p["user"] for p in self.peers.values()})

    def __contains__(self, peer: str) -> bool:
        return self.get(peer) is not None

    def __iter__(self) -> Iterator[dict]:
        return iter(list(self.peers.values()))

    def __len__(self) -> int:
        return len(self.peers)

"""The roster model shared by the roster property tests (one process and cluster).

Property: rosters kept the way symple-client 4.x keeps them always equal what
each session sees, and every routed frame reaches exactly its eligible
recipients, once each (docs/spec.md §4, §5 and §13).

A small alphabet of users and rooms makes overlaps, shared user rooms and
several sessions per user common.  The expected outcome comes from an
independent model of room membership, not from the router's own index.

User rooms are private: auth rooms and joins may name other users, which
puts the session in a *named* room of that name, never in the user's room.
Beyond the exact-recipient check, every frame a client receives is checked
against the model when it arrives: online presence and routed frames only
ever come from a session the receiver shares a legitimate room with (its
user room, or a named room both are in).
"""

from __future__ import annotations

import itertools
from typing import Any, Optional

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from symple_tx.router import Router
from symple_tx.session import Session
from symple_tx.wire import ProtocolError

from tests.fakes import FakeLink, connect, disconnect, make_router

USERS = ("ann", "bob", "cat")
ROOMS = ("r1", "r2", "r3")
#: Names a frame may be addressed to: rooms, user rooms and one unknown name.
NAMES = ROOMS + USERS + ("nowhere",)
pick = st.integers(min_value=0, max_value=1000)


class Client:
    """One live session plus the state its symple-client would hold."""

    def __init__(self, label: str, session: Session, link: FakeLink, rooms: set[str]) -> None:
        self.label = label
        self.session = session
        self.user = session.user
        self.link = link
        #: The model's idea of the session's *named* rooms, kept apart from the
        #: router's; its own name always means its user room, never one of these.
        self.rooms = set(rooms) - {self.user}
        #: symple-client's roster: data.id -> data.
        self.roster: dict[str, dict] = {}
        #: Unique ids of the routed frames received so far.
        self.seen: list[str] = []

    def sees(self, other: "Client") -> bool:
        """They share a legitimate room: the user room, or a named room both joined."""
        return other is not self and (
            other.user == self.user or not self.rooms.isdisjoint(other.rooms))

    def apply(self, frame: dict) -> None:
        """What symple-client 4.x does with an incoming frame."""
        kind = frame["type"]
        if kind == "welcome":
            self.roster.clear()
        elif kind == "presence":
            assert frame.get("probe") is not True, f"{self.label} was sent a probe: {frame}"
            data = frame["data"]
            assert "id" in data and "user" in data, f"{self.label}: bad presence {frame}"
            if data["online"]:
                self.roster[data["id"]] = data
            else:
                self.roster.pop(data["id"], None)
        if "mid" in frame:
            self.seen.append(frame["mid"])

    def __repr__(self) -> str:
        return self.label


class RosterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.router: Router = make_router()
        self.clients: list[Client] = []
        self.labels: dict[str, str] = {}
        self.counter = itertools.count(1)
        #: Frame id -> labels of the clients that must receive it.
        self.expected: dict[str, set[str]] = {}
        #: Session id -> the ``caps`` of its latest presence, if it sent one.
        self.caps: dict[str, int] = {}
        #: Frame id -> the sending session's id, and the frame's type.
        self.senders: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        #: Session id -> every legitimate room it has held ("@user" for its user room).
        self.held: dict[str, set[str]] = {}

    # -- helpers ------------------------------------------------------------

    def client(self, index: int) -> Client:
        return self.clients[index % len(self.clients)]

    def other(self, sender: Client, index: int) -> Optional[Client]:
        others = [c for c in self.clients if c is not sender]
        return others[index % len(others)] if others else None

    def deliver(self) -> None:
        """Let every live client read what it was sent.

        Each frame is checked as it arrives: nobody may see or hear from a
        session it shares no legitimate room with.
        """
        for client in self.clients:
            for frame in client.link.take():
                self.check_sender(client, frame)
                client.apply(frame)

    def note_rooms(self, client: Client) -> None:
        """Remember the legitimate rooms ``client`` has held, its user room included."""
        self.held.setdefault(client.session.id, set()).update(
            {"@" + client.user, *client.rooms})

    def check_sender(self, client: Client, frame: dict) -> None:
        """One process routes and reads in the same step, so the receiver must
        share a room with the sender right now."""
        sender_id = self.sender_of(frame)
        if sender_id is None:
            return
        sender = next((c for c in self.clients if c.session.id == sender_id), None)
        assert sender is not None and client.sees(sender), \
            f"{client} (rooms {sorted(client.rooms)}) got {frame['type']} from " \
            f"{sender or sender_id}, with whom it shares no room: {frame}"

    @staticmethod
    def sender_of(frame: dict) -> Optional[str]:
        """The session an online presence or a routed frame comes from."""
        if frame["type"] == "presence" and frame["data"].get("online"):
            return frame["data"]["id"]
        if "mid" in frame:
            return frame["from"].partition("|")[2]
        return None

    def eligible(self, sender: Client, to: Any) -> set[str]:
        """Who must receive a frame ``to``, per docs/spec.md §4."""
        live = [c for c in self.clients if c is not sender]
        if to is None:
            return {c.label for c in live if sender.sees(c)}
        if isinstance(to, list):
            return {c.label for c in live for room in to
                    if (room == sender.user and c.user == room)
                    or (room in sender.rooms and room in c.rooms)}
        target = next((c for c in live if to in (c.session.id, c.session.address)), None)
        if target is not None:
            return {target.label} if sender.sees(target) else set()
        # A name reaches that user's sessions and that named room's members,
        # of whom only those the sender shares a room with.
        return {c.label for c in live
                if (c.user == to or to in c.rooms) and sender.sees(c)}

    def route(self, sender: Client, frame: dict) -> None:
        mid = f"f{next(self.counter)}"
        frame["mid"] = mid
        self.expected[mid] = self.eligible(sender, frame.get("to"))
        self.senders[mid] = sender.session.id
        self.kinds[mid] = frame["type"]
        self.router.handle(sender.session, frame)

    def target(self, sender: Client, how: int, index: int) -> Any:
        """One of the addressing forms of the routing table."""
        if how == 3:
            return NAMES[index % len(NAMES)]
        if how == 4:
            return [r for i, r in enumerate(ROOMS + USERS) if index >> i & 1]
        other = self.other(sender, index)
        if how == 0 or other is None:
            return None
        return other.session.address if how == 1 else other.session.id

    # -- operations ---------------------------------------------------------

    @initialize(user=st.sampled_from(USERS), rooms=st.sets(st.sampled_from(ROOMS + USERS)))
    def first(self, user: str, rooms: set[str]) -> None:
        self.connect(user, rooms)

    #: Auth rooms may name any user, the session's own included.
    @rule(user=st.sampled_from(USERS), rooms=st.sets(st.sampled_from(ROOMS + USERS)))
    def connect(self, user: str, rooms: set[str]) -> None:
        session, link = connect(self.router, user, sorted(rooms))
        label = f"{user}#{next(self.counter)}"
        self.labels[session.id] = label
        client = Client(label, session, link, rooms)
        self.clients.append(client)
        self.note_rooms(client)
        self.deliver()
        snapshot = {i: data.get("caps") for i, data in client.roster.items()}
        assert snapshot == {i: self.caps.get(i) for i in snapshot}, \
            f"{client}'s snapshot lacks the latest presence: {snapshot}"

    @precondition(lambda self: self.clients)
    @rule(index=pick, room=st.sampled_from(ROOMS + USERS))
    def join(self, index: int, room: str) -> None:
        client = self.client(index)
        self.router.handle(client.session, {"type": "join", "room": room})
        if room != client.user:  # its own name: the user room it is already in
            client.rooms.add(room)
        self.note_rooms(client)

    @precondition(lambda self: self.clients)
    @rule(index=pick, room=st.sampled_from(ROOMS + USERS))
    def leave(self, index: int, room: str) -> None:
        client = self.client(index)
        frame = {"type": "leave", "room": room}
        if room == client.session.user:
            try:
                self.router.handle(client.session, frame)
            except ProtocolError as exc:
                assert exc.status == 403, exc
            else:
                raise AssertionError(f"{client} left its own user room")
            return
        self.router.handle(client.session, frame)
        client.rooms.discard(room)

    @precondition(lambda self: self.clients)
    @rule(index=pick)
    def disconnect(self, index: int) -> None:
        client = self.client(index)
        self.clients.remove(client)
        disconnect(self.router, client.session)

    @precondition(lambda self: self.clients)
    @rule(index=pick, probe=st.booleans(), how=st.integers(0, 3), whom=pick,
          caps=st.integers(0, 3))
    def presence(self, index: int, probe: bool, how: int, whom: int, caps: int) -> None:
        sender = self.client(index)
        frame: dict[str, Any] = {"type": "presence", "probe": probe,
                                 "data": {"caps": caps, "online": False, "id": "x"}}
        to = self.target(sender, how, whom)
        if to is not None:
            frame["to"] = to
        self.deliver()
        self.route(sender, frame)
        self.caps[sender.session.id] = caps
        if probe:
            # The server answers for every recipient, so nobody has to.
            answered = {self.labels[f["data"]["id"]] for f in sender.link.frames()
                        if f["type"] == "presence" and f["data"]["online"]}
            assert answered == self.expected[frame["mid"]], \
                f"probe of {sender} answered for {sorted(answered)}, " \
                f"expected {sorted(self.expected[frame['mid']])}"

    @precondition(lambda self: self.clients)
    @rule(index=pick, how=st.integers(0, 4), whom=pick)
    def message(self, index: int, how: int, whom: int) -> None:
        sender = self.client(index)
        frame: dict[str, Any] = {"type": "message", "from": "forged|x"}
        to = self.target(sender, how, whom)
        if to is not None:
            frame["to"] = to
        self.route(sender, frame)

    # -- what must always hold ----------------------------------------------

    @invariant()
    def rosters_match_visibility(self) -> None:
        self.deliver()
        for client in self.clients:
            want = {other.session.id for other in self.clients if client.sees(other)}
            have = set(client.roster)
            if have != want:
                name = self.labels.get
                raise AssertionError(
                    f"roster of {client} (rooms {sorted(client.rooms)}) is wrong: "
                    f"missing {sorted(name(i, i) for i in want - have)}, "
                    f"extra {sorted(name(i, i) for i in have - want)}")
            for session_id, data in client.roster.items():
                assert data["user"] == self.labels[session_id].split("#")[0], data

    @invariant()
    def frames_reach_exactly_their_recipients(self) -> None:
        self.deliver()
        received: dict[str, set[str]] = {mid: set() for mid in self.expected}
        for client in self.clients:
            assert len(client.seen) == len(set(client.seen)), \
                f"{client} received a frame twice: {client.seen}"
            for mid in client.seen:
                received[mid].add(client.label)
        live = {c.label for c in self.clients}
        for mid, want in self.expected.items():
            # Clients that left since cannot be checked any more.
            want = want & live
            missing = {label for label in want - received[mid] if not self.may_miss(label, mid)}
            assert received[mid] <= want and not missing, \
                f"frame {mid} reached {sorted(received[mid])}, expected {sorted(want)}"

    def may_miss(self, label: str, mid: str) -> bool:
        """Whether an eligible client may legitimately not have received ``mid``."""
        return False

    @invariant()
    def router_index_matches_model(self) -> None:
        for client in self.clients:
            assert client.session.rooms == client.rooms, (client, client.session.rooms)
        assert set(self.router.sessions) == {c.session.id for c in self.clients}
        assert all(self.router.rooms.values()), "an empty room was kept"
        users: dict[str, set[str]] = {}
        for client in self.clients:
            users.setdefault(client.user, set()).add(client.session.id)
        have = self.user_rooms()
        assert have == users, f"user rooms {have}, expected {users}"

    def user_rooms(self) -> dict[str, set[str]]:
        """The router's user-room index: user -> session ids."""
        return {user: {s.id for s in members} for user, members in self.router.users.items()}

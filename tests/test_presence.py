"""Presence and the roster invariant (docs/spec.md §5 and §13) over real WebSockets."""

from __future__ import annotations

import secrets
from typing import Any, Callable

from twisted.internet import defer

from symple_tx.config import Settings
from tests.routing_support import RoutingCase, of_kind
from tests.support import TestPeer, eventually, presence_of, presences


def is_presence(peer: TestPeer, online: bool) -> Callable[[dict], bool]:
    """Matches a presence frame announcing ``peer`` online or offline."""
    def match(frame: dict) -> bool:
        return (frame.get("type") == "presence" and frame.get("from") == peer.address
                and frame.get("data", {}).get("online") is online)
    return match


class PresenceCase(RoutingCase):
    """Peers that behave like symple-client 4.0.1 as well as plain ones."""

    @defer.inlineCallbacks
    def js_peer(self, user: str, rooms: list[str], capabilities: Any = None):
        """Authenticate like the JS client (empty strings, ``data.peerType``), then probe.

        Fires with ``(peer, frames received up to and including the probe answers)``.
        """
        peer = yield self.connect()
        yield peer.auth(user, name="", token="", rooms=rooms, data={"peerType": "person"})
        data = {**peer.welcome["peer"], "rooms": peer.welcome["rooms"]}
        if capabilities is not None:
            data["capabilities"] = capabilities
        peer.send_json({"type": "presence", "probe": True, "data": data,
                        "from": peer.address, "id": secrets.token_hex(8)})
        return peer

    def assert_announced(self, frames: list[dict], peers: list[TestPeer], online: bool,
                         what: str) -> None:
        """``frames`` announce exactly ``peers`` (once each) with the given ``online``."""
        announced = sorted(f["from"] for f in presences(frames))
        self.assertEqual(announced, sorted(p.address for p in peers), what)
        for frame in presences(frames):
            self.assertIs(frame["data"]["online"], online, what)


class AuthPresenceTests(PresenceCase):
    @defer.inlineCallbacks
    def test_newcomer_and_the_peers_it_sees_learn_of_each_other_once(self):
        p = yield self.peers_in(bob=["lobby"], dave=["lobby", "x"], carol=["side"])
        alice = yield self.connect()
        yield alice.auth("alice", rooms=["lobby"])
        got = yield self.collect(alice, *p.values())
        self.assertEqual(alice.received[0]["type"], "welcome")
        self.assert_announced(got[alice], [p["bob"], p["dave"]], True, "snapshot")
        for user in ("bob", "dave"):
            self.assert_announced(got[p[user]], [alice], True, f"{user} learns of alice")
        self.assertEqual(presences(got[p["carol"]]), [])
        snapshot = presence_of(got[alice], p["bob"])[0]["data"]
        self.assertEqual((snapshot["id"], snapshot["user"], snapshot["name"]),
                         (p["bob"].session_id, "bob", "bob"))

    @defer.inlineCallbacks
    def test_js_client_auth_with_empty_strings_and_peer_type(self):
        peer = yield self.connect()
        welcome = yield peer.auth("alice", name="", token="", data={"peerType": "person"})
        self.assertEqual(welcome["protocol"], "symple/4")
        self.assertEqual(welcome["status"], 200)
        me = welcome["peer"]
        self.assertEqual((me["user"], me["name"], me["online"]), ("alice", "alice", True))
        self.assertEqual(me["peerType"], "person")
        self.assertNotIn("token", me)
        self.assertRegex(me["id"], r"^[A-Za-z0-9_-]{16,}$")  # >= 96 bits, URL-safe, no "|"
        self.assertEqual(welcome["rooms"], ["alice"])
        self.assertEqual(me["host"], "127.0.0.1")

    @defer.inlineCallbacks
    def test_session_ids_are_unique(self):
        ids = set()
        for _ in range(20):
            peer = yield self.peer("alice")
            ids.add(peer.session_id)
        self.assertEqual(len(ids), 20)

    @defer.inlineCallbacks
    def test_proxy_headers_are_ignored_unless_trusted(self):
        peer = yield self.connect(headers={"X-Forwarded-For": "203.0.113.9",
                                           "X-Real-IP": "203.0.113.10"})
        welcome = yield peer.auth("alice")
        self.assertEqual(welcome["peer"]["host"], "127.0.0.1")


class TrustedProxyTests(PresenceCase):
    settings = Settings(trust_proxy=True)

    @defer.inlineCallbacks
    def test_forwarded_address_becomes_the_host(self):
        # What the client wrote itself comes first; the proxy appended the last entry.
        peer = yield self.connect(headers={"X-Forwarded-For": "10.6.6.6, 203.0.113.9"})
        welcome = yield peer.auth("alice")
        self.assertEqual(welcome["peer"]["host"], "203.0.113.9")
        peer = yield self.connect(headers={"X-Real-IP": "203.0.113.10"})
        welcome = yield peer.auth("bob")
        self.assertEqual(welcome["peer"]["host"], "203.0.113.10")

    @defer.inlineCallbacks
    def test_an_unbelievable_forwarded_address_leaves_the_own_address(self):
        peer = yield self.connect(headers={"X-Forwarded-For": "not-an-address"})
        welcome = yield peer.auth("alice")
        self.assertEqual(welcome["peer"]["host"], "127.0.0.1")


class TwoProxiesTests(PresenceCase):
    settings = Settings(trust_proxy=True, proxy_hops=2)

    @defer.inlineCallbacks
    def test_the_address_the_outer_proxy_saw_is_the_host(self):
        peer = yield self.connect(headers={"X-Forwarded-For":
                                           "10.6.6.6, 203.0.113.9, 10.0.0.2"})
        welcome = yield peer.auth("alice")
        self.assertEqual(welcome["peer"]["host"], "203.0.113.9")

    @defer.inlineCallbacks
    def test_snapshot_carries_the_latest_presence_data(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        for caps in ({"video": True}, {"video": False, "audio": True}):
            p["alice"].send_json({"type": "presence", "data": {"capabilities": caps}})
        yield self.collect(*p.values())
        erin = yield self.peer("erin", rooms=["lobby"])
        got = yield self.collect(erin)
        alice_now = presence_of(got[erin], p["alice"])
        self.assertEqual(len(alice_now), 1)
        self.assertEqual(alice_now[0]["data"]["capabilities"], {"video": False, "audio": True})

    @defer.inlineCallbacks
    def test_presence_data_is_rewritten_from_the_session(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        alice, bob = p["alice"], p["bob"]
        alice.send_json({"type": "presence", "data": {
            "id": "forged", "user": "mallory", "name": "Mallory", "online": False,
            "type": "bot", "host": "203.0.113.66", "capabilities": {"video": True}}})
        got = yield self.collect(alice, bob)
        (frame,) = presence_of(got[bob], alice)
        data = frame["data"]
        self.assertEqual((data["id"], data["user"], data["name"], data["online"]),
                         (alice.session_id, "alice", "alice", True))
        self.assertNotIn("type", data)
        self.assertEqual(data["host"], alice.welcome["peer"]["host"])
        self.assertEqual(data["capabilities"], {"video": True})


class ProbeTests(PresenceCase):
    """The JS client's probe right after welcome, and its answers by bare session id."""

    @defer.inlineCallbacks
    def test_server_answers_a_probe_with_every_visible_peer_and_forwards_it_unflagged(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby", "x"],
                                carol=["side"])
        # bob's capabilities change after he joined: the answers must carry them.
        p["bob"].send_json({"type": "presence", "data": {"capabilities": {"video": True}}})
        yield self.collect(*p.values())
        erin = yield self.connect()
        yield erin.auth("erin", name="", token="", rooms=["lobby"], data={"peerType": "person"})
        snapshot = yield self.collect(erin)
        self.assert_announced(snapshot[erin], [p["alice"], p["bob"], p["dave"]], True,
                              "snapshot")
        yield self.collect(*p.values())
        erin.send_json({"type": "presence", "probe": True, "from": erin.address, "id": "p1",
                        "data": {**erin.welcome["peer"], "rooms": erin.welcome["rooms"],
                                 "capabilities": {"audio": True}}})
        got = yield self.collect(erin, *p.values())
        self.assert_announced(got[erin], [p["alice"], p["bob"], p["dave"]], True, "answers")
        self.assertEqual(presence_of(got[erin], p["bob"])[0]["data"]["capabilities"],
                         {"video": True})
        for user in ("alice", "bob", "dave"):
            (forwarded,) = presences(got[p[user]])
            self.assertNotEqual(forwarded.get("probe"), True)
            self.assertEqual(forwarded["from"], erin.address)
            self.assertEqual(forwarded["id"], "p1")
            self.assertEqual(forwarded["data"]["capabilities"], {"audio": True})
            self.assertEqual(forwarded["data"]["peerType"], "person")
            self.assertEqual(forwarded["data"]["id"], erin.session_id)
        self.assertEqual(presences(got[p["carol"]]), [])

    @defer.inlineCallbacks
    def test_probe_answer_by_bare_session_id_reaches_the_prober_only(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], carol=["side"])
        erin = yield self.js_peer("erin", ["lobby"])
        p["erin"] = erin
        yield self.collect(*p.values())
        answer = {"type": "presence", "to": erin.session_id, "from": p["bob"].address,
                  "id": "a1", "data": {**p["bob"].welcome["peer"], "rooms": ["lobby"]}}
        got = yield self.assert_reaches(p["bob"], answer, p, {"erin"})
        self.assertEqual(got["erin"][0]["from"], p["bob"].address)
        self.assertIs(got["erin"][0]["data"]["online"], True)
        # A peer that shares no room cannot answer (or spoof an answer) that way.
        yield self.assert_reaches(p["carol"], {**answer, "id": "a2"}, p, set())


class RoomPresenceTests(PresenceCase):
    @defer.inlineCallbacks
    def test_join_announces_only_newly_visible_peers_after_join_ok(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby", "stage"], erin=["stage"],
                                carol=["side"])
        alice = p["alice"]
        alice.send_json({"type": "join", "room": "stage", "id": "j1"})
        got = yield self.collect(*p.values())
        self.assertEqual(got[alice][0], {"type": "join:ok", "room": "stage", "id": "j1"})
        self.assert_announced(got[alice][1:], [p["erin"]], True, "alice sees erin")
        self.assert_announced(got[p["erin"]], [alice], True, "erin sees alice")
        self.assertEqual(got[p["bob"]], [])
        self.assertEqual(got[p["carol"]], [])
        # Joining again changes nothing.
        alice.send_json({"type": "join", "room": "stage"})
        got = yield self.collect(*p.values())
        self.assertEqual(got[alice], [{"type": "join:ok", "room": "stage"}])
        self.assertEqual([got[p[u]] for u in ("bob", "erin", "carol")], [[], [], []])

    @defer.inlineCallbacks
    def test_leave_sends_offline_only_for_pairs_that_no_longer_share_a_room(self):
        p = yield self.peers_in(alice=["lobby", "stage"], bob=["lobby", "stage"],
                                erin=["stage"], carol=["side"])
        alice = p["alice"]
        alice.send_json({"type": "leave", "room": "stage", "id": "l1"})
        got = yield self.collect(*p.values())
        self.assertEqual(got[alice][0], {"type": "leave:ok", "room": "stage", "id": "l1"})
        self.assert_announced(got[alice][1:], [p["erin"]], False, "alice loses erin")
        self.assert_announced(got[p["erin"]], [alice], False, "erin loses alice")
        self.assertEqual(got[p["bob"]], [])
        self.assertEqual(got[p["carol"]], [])
        # Leaving a room one is not in is acknowledged and changes nothing.
        alice.send_json({"type": "leave", "room": "stage"})
        got = yield self.collect(*p.values())
        self.assertEqual(got[alice], [{"type": "leave:ok", "room": "stage"}])
        self.assertEqual([got[p[u]] for u in ("bob", "erin", "carol")], [[], [], []])
        # Traffic follows: erin no longer reaches alice.
        yield self.assert_reaches(p["erin"], {"type": "message", "subtype": "t"}, p, {"bob"})


class DisconnectTests(PresenceCase):
    """Every kind of disconnect announces the peer offline exactly once to those who saw it."""

    @defer.inlineCallbacks
    def assert_offline_once(self, disconnect: Callable[[TestPeer], Any]):
        p = yield self.peers_in(alice=["lobby", "stage"], bob=["lobby"], erin=["stage"],
                                carol=["side"])
        alice = p.pop("alice")
        alice_too = yield self.peer("alice", rooms=[])  # same user, another session
        p["alice_too"] = alice_too
        yield self.collect(alice, *p.values())
        yield disconnect(alice)
        for watcher in (p["bob"], p["erin"], alice_too):
            yield watcher.expect(is_presence(alice, False), "offline presence")
        yield self.collect(*p.values())
        for user, peer in p.items():
            offline = [f for f in peer.received if is_presence(alice, False)(f)]
            self.assertEqual(len(offline), 0 if user == "carol" else 1, user)
        self.assertEqual([f for f in p["carol"].received if f.get("from") == alice.address], [])
        # The departed address no longer routes.
        yield self.assert_reaches(p["bob"], {"type": "message", "subtype": "t",
                                             "to": alice.address}, p, set())
        return alice

    @defer.inlineCallbacks
    def test_clean_websocket_close(self):
        def close(peer: TestPeer):
            peer.sendClose(1000)
            return peer.wait_closed()
        yield self.assert_offline_once(close)

    @defer.inlineCallbacks
    def test_close_frame_closes_with_1000(self):
        def close(peer: TestPeer):
            peer.send_json({"type": "close"})
            return peer.wait_closed()
        alice = yield self.assert_offline_once(close)
        self.assertEqual(alice.close_code, 1000)

    @defer.inlineCallbacks
    def test_tcp_abort(self):
        def abort(peer: TestPeer):
            peer.transport.abortConnection()
            return peer.wait_closed()
        yield self.assert_offline_once(abort)


class SameUserTests(PresenceCase):
    @defer.inlineCallbacks
    def test_sessions_of_one_user_share_the_user_room(self):
        bob = yield self.peer("bob", rooms=["lobby"])
        first = yield self.peer("alice")
        second = yield self.peer("alice")
        got = yield self.collect(bob, first, second)
        self.assertEqual(second.welcome["rooms"], ["alice"])
        self.assertNotEqual(first.session_id, second.session_id)
        self.assert_announced(got[first], [second], True, "first sees second")
        self.assert_announced(got[second], [first], True, "second sees first")
        self.assertEqual(presences(got[bob]), [])
        peers = {"bob": bob, "first": first, "second": second}
        yield self.assert_reaches(first, {"type": "message", "subtype": "t", "to": "alice"},
                                  peers, {"second"})
        yield self.assert_reaches(first, {"type": "message", "subtype": "u"}, peers,
                                  {"second"})
        # The user room cannot be left.
        first.send_json({"type": "leave", "room": "alice", "id": "l"})
        got = yield self.collect(first)
        self.assertEqual(of_kind(got[first], "error")[0]["status"], 403)


def roster(peer: TestPeer) -> set[str]:
    """The session ids a symple-client 4.x roster holds after every presence received."""
    entries: set[str] = set()
    for frame in presences(peer.received):
        data = frame.get("data") or {}
        if not data.get("id") or not data.get("user"):
            continue
        if data.get("online"):
            entries.add(data["id"])
        else:
            entries.discard(data["id"])
    return entries


class RosterInvariantTests(PresenceCase):
    """Section 5: at every quiescent moment each roster equals what its owner sees."""

    @defer.inlineCallbacks
    def test_rosters_follow_a_busy_sequence_of_changes(self):
        live: dict[str, TestPeer] = {}
        # An independent model: name -> rooms, the user room as "@user", apart
        # from named rooms: dan's join of "ann" below joins a named room that
        # ann's sessions are not in.
        rooms: dict[str, set[str]] = {}

        @defer.inlineCallbacks
        def arrive(name: str, user: str, *joined: str):
            live[name] = yield self.peer(user, rooms=list(joined))
            rooms[name] = {"@" + user, *joined}

        def send(name: str, kind: str, room: str) -> None:
            live[name].send_json({"type": kind, "room": room})
            (rooms[name].add if kind == "join" else rooms[name].discard)(room)

        @defer.inlineCallbacks
        def depart(name: str, how: str):
            peer = live.pop(name)
            del rooms[name]
            if how == "close":
                peer.send_json({"type": "close"})
            else:
                peer.transport.abortConnection()
            yield peer.wait_closed()
            yield eventually(lambda: peer.session_id not in self.server.router.sessions,
                             what="server notices the disconnect")

        steps = [
            lambda: arrive("ann", "ann", "lobby"),
            lambda: arrive("bob", "bob", "lobby", "stage"),
            lambda: arrive("cat", "cat", "stage"),
            lambda: arrive("dan", "dan"),
            lambda: send("ann", "join", "stage"),
            lambda: send("cat", "leave", "stage"),
            lambda: send("dan", "join", "lobby"),
            lambda: arrive("ann2", "ann"),
            lambda: depart("bob", "close"),
            lambda: send("cat", "join", "lobby"),
            lambda: send("ann", "leave", "lobby"),
            lambda: send("ann", "leave", "stage"),
            lambda: send("dan", "join", "ann"),
            lambda: depart("dan", "abort"),
            lambda: arrive("bob", "bob", "stage"),
            lambda: send("ann2", "join", "stage"),
        ]
        for number, step in enumerate(steps):
            yield step()
            yield self.collect(*live.values())
            for name, peer in live.items():
                sees = {live[other].session_id for other in live
                        if other != name and rooms[name] & rooms[other]}
                self.assertEqual(roster(peer), sees, f"step {number}: roster of {name}")

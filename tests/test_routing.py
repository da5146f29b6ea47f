"""Routing over real WebSockets: every row of docs/spec.md §4."""

from __future__ import annotations

from twisted.internet import defer

from tests.routing_support import RoutingCase, of_kind


class RoutingTableTests(RoutingCase):
    """One test per row of the routing table."""

    @defer.inlineCallbacks
    def test_absent_to_reaches_everyone_sharing_a_room_but_the_sender(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby", "x"],
                                carol=["side"])
        yield self.assert_reaches(p["alice"], {"type": "message", "subtype": "t"}, p,
                                  {"bob", "dave"})

    @defer.inlineCallbacks
    def test_user_and_id_address_reaches_only_that_session(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby"])
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": p["bob"].address}, p, {"bob"})

    @defer.inlineCallbacks
    def test_bare_session_id_reaches_only_that_session(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby"])
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": p["bob"].session_id}, p,
            {"bob"})

    @defer.inlineCallbacks
    def test_address_with_wrong_user_reaches_nobody(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby"])
        forged = f"dave|{p['bob'].session_id}"
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": forged}, p, set())

    @defer.inlineCallbacks
    def test_bare_room_name_reaches_members_that_share_a_room_with_the_sender(self):
        # alice is not in "stage": bob (shares "lobby") gets it, erin (shares nothing) not.
        p = yield self.peers_in(alice=["lobby"], bob=["lobby", "stage"], erin=["stage"],
                                dave=["lobby"])
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": "stage"}, p, {"bob"})

    @defer.inlineCallbacks
    def test_bare_room_name_of_own_room_reaches_its_members(self):
        p = yield self.peers_in(alice=["lobby", "stage"], bob=["lobby"], erin=["stage"])
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": "stage"}, p, {"erin"})

    @defer.inlineCallbacks
    def test_bare_user_name_reaches_that_users_sessions(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], dave=["lobby"])
        bob2 = yield self.peer("bob", rooms=["other"])
        p["bob2"] = bob2
        yield self.collect(*p.values())
        # bob2 shares only the user room "bob" with nobody but bob: alice cannot reach it.
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": "bob"}, p, {"bob"})
        # bob's own second session is reachable through the shared user room.
        yield self.assert_reaches(
            p["bob"], {"type": "message", "subtype": "t2", "to": "bob"}, p, {"bob2"})

    @defer.inlineCallbacks
    def test_array_reaches_members_of_the_senders_rooms_only(self):
        # alice is in r1 but not r2: bob (r2, shares lobby) is not reached through r2.
        p = yield self.peers_in(alice=["lobby", "r1"], bob=["lobby", "r2"], dave=["r1"],
                                frank=["r2"])
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": ["r1", "r2"]}, p, {"dave"})

    @defer.inlineCallbacks
    def test_empty_array_reaches_nobody(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": []}, p, set())

    @defer.inlineCallbacks
    def test_invalid_to_is_a_400_and_the_connection_stays_open(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        alice = p["alice"]
        invalid = [42, 1.5, True, None, {}, {"user": "bob"}, "", "x" * 257, [1],
                   [""], ["lobby", None], [["lobby"]], ["x" * 257]]
        for number, to in enumerate(invalid):
            alice.send_json({"type": "message", "subtype": "t", "to": to, "id": number})
            got = yield self.collect(alice, p["bob"])
            self.assertEqual(of_kind(got[p["bob"]], "message", subtype="t"), [],
                             f"to={to!r} delivered")
            errors = of_kind(got[alice], "error")
            self.assertEqual(len(errors), 1, f"to={to!r}: {got[alice]!r}")
            self.assertEqual(errors[0]["status"], 400)
            self.assertEqual(errors[0]["id"], number)
            self.assertIn("'to'", errors[0]["message"])
        # Still open and still routing.
        yield self.assert_reaches(alice, {"type": "message", "subtype": "after"}, p, {"bob"})


class PermissionTests(RoutingCase):
    """Rooms are the only permission boundary (docs/spec.md §3)."""

    @defer.inlineCallbacks
    def test_peers_without_a_shared_room_never_reach_each_other(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], carol=["side"])
        alice, carol = p["alice"], p["carol"]
        for sender, target in ((alice, carol), (carol, alice)):
            addresses = [None, target.address, target.session_id,
                         target.welcome["peer"]["user"], "side", "lobby", ["side"],
                         ["lobby"], [target.welcome["peer"]["user"]]]
            for kind in ("message", "presence", "command", "event"):
                for to in addresses:
                    frame: dict = {"type": kind, "subtype": "leak"}
                    if to is not None:
                        frame["to"] = to
                    got, errors = yield self.deliver(sender, frame, {"target": target})
                    self.assertEqual(got["target"], [], f"{frame!r} leaked")
                    # Blocked traffic is dropped silently, as the reference servers do.
                    self.assertEqual(errors, [])
        self.assertEqual(of_kind(carol.received, "presence", subtype="leak"), [])

    @defer.inlineCallbacks
    def test_stale_address_of_a_departed_peer_reaches_nobody(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        bob = p.pop("bob")
        address = bob.address
        bob.transport.loseConnection()
        yield bob.wait_closed()
        dave = yield self.peer("dave", rooms=["lobby"])
        p["dave"] = dave
        yield self.collect(*p.values())
        yield self.assert_reaches(
            p["alice"], {"type": "message", "subtype": "t", "to": address}, p, set())


    @defer.inlineCallbacks
    def test_a_room_named_like_an_address_cannot_catch_its_traffic(self):
        # mallory sees bob's address in his presence and joins a room of that name:
        # signalling meant for bob must never reach her, before or after he leaves.
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"], mallory=["lobby"])
        bob = p.pop("bob")
        address = bob.address
        p["mallory"].send_json({"type": "join", "room": address})
        yield self.collect(*p.values(), bob)
        frame = {"type": "message", "subtype": "call:offer", "to": address}
        yield self.assert_reaches(p["alice"], frame, {**p, "bob": bob}, {"bob"})
        bob.transport.loseConnection()
        yield bob.wait_closed()
        yield p["alice"].expect(lambda f: f.get("from") == address
                                and f["data"]["online"] is False, "bob offline")
        yield self.assert_reaches(p["alice"], frame, p, set())


class ExactlyOnceTests(RoutingCase):
    """A recipient gets each frame once, however many rooms it shares with the sender."""

    @defer.inlineCallbacks
    def test_overlapping_rooms_deliver_once_for_every_address_form(self):
        rooms = ["r1", "r2", "r3"]
        p = yield self.peers_in(alice=rooms, bob=rooms, dave=["r2", "r3"], carol=["zz"])
        # alice and bob even share each other's user rooms.
        for peer, other in ((p["alice"], "bob"), (p["bob"], "alice")):
            peer.send_json({"type": "join", "room": other})
        yield self.collect(*p.values())
        forms = [None, "r1", "r2", ["r1", "r2", "r3"], ["r1", "r1", "r2"], "bob",
                 ["bob", "r1"], p["bob"].address, p["bob"].session_id]
        for number, to in enumerate(forms):
            frame: dict = {"type": "message", "subtype": f"t{number}"}
            if to is not None:
                frame["to"] = to
            got, _ = yield self.deliver(p["alice"], frame, p)
            self.assertEqual(len(got["bob"]), 1, f"to={to!r}: {got['bob']!r}")
            self.assertEqual(got["alice"], [])
            self.assertEqual(got["carol"], [])
            self.assertLessEqual(len(got["dave"]), 1, f"to={to!r}")


class FieldTests(RoutingCase):
    """``from`` is overwritten, ``token`` removed, everything else untouched."""

    @defer.inlineCallbacks
    def test_from_is_overwritten_token_stripped_and_the_rest_passes_through(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        alice, bob = p["alice"], p["bob"]
        for kind in ("message", "command", "event"):
            frame = {"type": kind, "subtype": "t", "from": "mallory|forged", "token": "secret",
                     "id": "m-1", "to": bob.address, "node": "x", "status": 200,
                     "name": "ev", "data": {"text": "héllo ✓ 🎉", "n": [1, 2.5, None, True],
                                            "deep": {"a": {"b": ["c"]}}},
                     "custom": {"__proto__": {"polluted": True}, "constructor": 1}}
            got, _ = yield self.deliver(alice, frame, {"bob": bob})
            self.assertEqual(len(got["bob"]), 1)
            expected = {k: v for k, v in frame.items() if k != "token"}
            expected["from"] = alice.address
            self.assertEqual(got["bob"][0], expected)

    @defer.inlineCallbacks
    def test_token_removed_from_presence_at_any_depth(self):
        p = yield self.peers_in(alice=["lobby"], bob=["lobby"])
        alice, bob = p["alice"], p["bob"]
        alice.send_json({"type": "presence", "token": "top", "subtype": "t",
                         "data": {"token": "d", "capabilities": {"video": True, "token": "c"},
                                  "list": [{"token": "l", "keep": 1}]}})
        got = yield self.collect(alice, bob)
        frames = of_kind(got[bob], "presence", subtype="t")
        self.assertEqual(len(frames), 1)
        self.assertNotIn("token", frames[0])
        data = frames[0]["data"]
        self.assertEqual(data["capabilities"], {"video": True})
        self.assertEqual(data["list"], [{"keep": 1}])
        self.assertNotIn("token", data)
        self.assertEqual(frames[0]["from"], alice.address)

    @defer.inlineCallbacks
    def test_token_removed_from_auth_data_before_anyone_sees_it(self):
        bob = yield self.peer("bob", rooms=["lobby"])
        alice = yield self.peer("alice", rooms=["lobby"], token="frame-token",
                                data={"token": "top", "profile": {"token": "deep", "age": 7},
                                      "devices": [{"token": "d", "kind": "phone"}]})
        got = yield self.collect(alice, bob)
        (announced,) = [f for f in got[bob] if f.get("from") == alice.address]
        for peer in (alice.welcome["peer"], announced["data"]):
            self.assertNotIn("token", peer)
            self.assertEqual(peer["profile"], {"age": 7})
            self.assertEqual(peer["devices"], [{"kind": "phone"}])

    @defer.inlineCallbacks
    def test_command_event_and_presence_follow_the_same_table(self):
        p = yield self.peers_in(alice=["lobby", "r1"], bob=["lobby"], dave=["r1"],
                                carol=["side"])
        for kind in ("command", "event", "presence"):
            cases = [(None, {"bob", "dave"}), (p["bob"].address, {"bob"}),
                     (p["dave"].session_id, {"dave"}), ("r1", {"dave"}),
                     (["lobby"], {"bob"}), ("side", set())]
            for to, expected in cases:
                frame: dict = {"type": kind, "subtype": f"{kind}-{to}", "node": "n"}
                if to is not None:
                    frame["to"] = to
                yield self.assert_reaches(p["alice"], frame, p, expected)

"""SympleClient against a real server over loopback (its pure parts: tests/unit)."""

from __future__ import annotations

import random
import tempfile
from typing import Optional

from twisted.internet import defer
from twisted.trial import unittest

from symple_tx.client import AuthError, ClientError, ConnectError, NotConnected, SympleClient
from symple_tx.config import Settings
from symple_tx.hooks import AuthRejected
from symple_tx.service import SympleServer, SympleService
from tests.client_support import ClientMixin
from tests.support import (WAIT, ServerTestCase, eventually, free_port, self_signed_cert,
                           with_timeout)


def users(client: SympleClient) -> list[str]:
    return client.roster.users()


class ConnectTests(ClientMixin, ServerTestCase):
    @defer.inlineCallbacks
    def test_welcome_sets_peer_and_rooms(self):
        alice = yield self.online("alice", name="Alice", rooms=["lobby"], data={"mood": "ok"})
        self.assertTrue(alice.online)
        self.assertEqual(alice.peer["name"], "Alice")
        self.assertEqual(alice.peer["mood"], "ok")
        self.assertEqual(sorted(alice.rooms), ["alice", "lobby"])
        self.assertEqual(alice.address, f"alice|{alice.peer['id']}")

    @defer.inlineCallbacks
    def test_messages_and_wait_helpers(self):
        alice = yield self.online("alice", rooms=["lobby"])
        bob = yield self.online("bob", rooms=["lobby"])
        peer = yield with_timeout(alice.wait_for_peer("bob"), what="bob in roster")
        self.assertEqual(peer["id"], bob.peer["id"])
        got = bob.next_message({"subtype": "wanted"}, timeout=WAIT)
        alice.send_message(bob.address, {"n": 1}, subtype="other")
        alice.send_message(bob.address, {"n": 2}, subtype="wanted", token="secret")
        frame = yield got
        self.assertEqual(frame["data"], {"n": 2})
        self.assertEqual(frame["from"], alice.address)
        self.assertNotIn("token", frame)
        answer = alice.next_message(timeout=WAIT)
        bob.respond(frame, data={"ok": True})
        reply = yield answer
        self.assertEqual(reply["id"], frame["id"])
        self.assertEqual(reply["subtype"], "wanted")
        self.assertEqual(reply["data"], {"ok": True})

    @defer.inlineCallbacks
    def test_command_and_event_frames_reach_their_events(self):
        alice = yield self.online("alice", rooms=["lobby"])
        bob = yield self.online("bob", rooms=["lobby"])
        commands = bob.once("command", timeout=WAIT)
        events = bob.once("event", timeout=WAIT)
        alice.send_command(bob.address, node="ping")
        alice.send_event("typing", to="lobby")
        command, event = yield defer.gatherResults([commands, events])
        self.assertEqual(command["node"], "ping")
        self.assertEqual(event["name"], "typing")

    @defer.inlineCallbacks
    def test_server_error_frame_becomes_error_event(self):
        alice = yield self.online("alice")
        errors = alice.once("error", timeout=WAIT)
        alice.send({"type": "message", "to": 42})
        error = yield errors
        self.assertIsInstance(error, ClientError)
        self.assertEqual(error.status, 400)

    @defer.inlineCallbacks
    def test_send_while_offline_raises(self):
        client = self.make_client("alice")
        self.assertRaises(NotConnected, client.send_message, None, "hi")
        failure = yield self.assertFailure(client.join("room"), NotConnected)
        self.assertIn("Not connected", str(failure))

    @defer.inlineCallbacks
    def test_unreachable_server_fails_without_retrying(self):
        client = self.make_client("alice", url=f"ws://127.0.0.1:{free_port()}/")
        errors = []
        client.on("error", errors.append)
        error = yield self.assertFailure(with_timeout(client.connect()), ConnectError)
        self.assertIn("Cannot connect", str(error))
        self.assertEqual(len(errors), 1)
        self.assertIsNone(client._service)

    @defer.inlineCallbacks
    def test_explicit_disconnect_does_not_reconnect(self):
        alice = yield self.online("alice", rooms=["lobby"])
        bob = yield self.online("bob", rooms=["lobby"])
        yield with_timeout(alice.wait_for_peer("bob"))
        gone = alice.once("disconnect", timeout=WAIT)
        left = bob.once("remove_peer", timeout=WAIT)
        yield alice.disconnect()
        info = yield gone
        self.assertFalse(info["reconnecting"])
        peer = yield left
        self.assertEqual(peer["user"], "alice")
        self.assertFalse(alice.online)
        self.assertEqual(len(alice.roster), 0)
        self.assertEqual(len(self.server.router.sessions), 1)


class RosterTests(ClientMixin, ServerTestCase):
    @defer.inlineCallbacks
    def test_roster_follows_joins_leaves_and_disconnects(self):
        alice = yield self.online("alice", rooms=["lobby"])
        bob = yield self.online("bob", rooms=["lobby"])
        carol = yield self.online("carol", rooms=["side"])
        yield eventually(lambda: users(alice) == ["bob"] and users(bob) == ["alice"])
        self.assertEqual(users(carol), [])

        events: list[tuple[str, str]] = []
        for kind in ("add_peer", "remove_peer"):
            alice.on(kind, lambda p, kind=kind: events.append((kind, p["user"])))

        room = yield with_timeout(carol.join("lobby"), what="join:ok")
        self.assertEqual(room, "lobby")
        self.assertIn("lobby", carol.rooms)
        self.assertEqual(carol.joined, ["lobby"])
        yield eventually(lambda: users(carol) == ["alice", "bob"]
                         and users(alice) == ["bob", "carol"], what="rosters after join")

        yield with_timeout(carol.leave("lobby"), what="leave:ok")
        self.assertNotIn("lobby", carol.rooms)
        yield eventually(lambda: users(carol) == [] and users(alice) == ["bob"],
                         what="rosters after leave")

        yield bob.disconnect()
        yield eventually(lambda: users(alice) == [], what="alice's roster after bob left")
        self.assertEqual(events, [("add_peer", "carol"), ("remove_peer", "carol"),
                                  ("remove_peer", "bob")])

    @defer.inlineCallbacks
    def test_two_sessions_of_one_user_are_two_roster_entries(self):
        alice = yield self.online("alice")
        phone = yield self.online("alice")
        yield eventually(lambda: len(alice.roster) == 1 and len(phone.roster) == 1)
        self.assertIn(phone.address, alice.roster)
        self.assertNotIn(alice.peer["id"], alice.roster.peers)

    @defer.inlineCallbacks
    def test_refused_join_fails_the_deferred(self):
        alice = yield self.online("alice")
        error = yield self.assertFailure(with_timeout(alice.join("x" * 300)), ValueError)
        self.assertIn("Invalid room", str(error))
        self.server.settings.dynamic_rooms = False
        error = yield self.assertFailure(with_timeout(alice.join("lobby")), ClientError)
        self.assertEqual(error.status, 403)
        self.assertEqual(alice.joined, [])

    @defer.inlineCallbacks
    def test_capabilities_are_announced_and_queryable(self):
        alice = yield self.online("alice", rooms=["lobby"])
        bob = self.make_client("bob", rooms=["lobby"])
        bob.add_capability("video")
        yield with_timeout(bob.connect())
        peer = yield with_timeout(alice.wait_for_peer("bob"))
        self.assertEqual(peer["capabilities"], {"video": True})
        self.assertTrue(alice.has_capability("video", bob.address))
        self.assertTrue(bob.has_capability("video"))

        # bob is already in alice's roster: the update that announces audio satisfies a wait
        with_audio = alice.wait_for_peer(lambda p: "audio" in p.get("capabilities", {}))
        self.assertFalse(with_audio.called)
        bob.add_capability("audio", {"codec": "opus"})
        peer = yield with_timeout(with_audio, what="bob's audio capability")
        self.assertEqual(peer["id"], bob.peer["id"])
        self.assertEqual(alice.get_capability("audio", bob.peer["id"]), {"codec": "opus"})

        updated = alice.once("update_peer", timeout=WAIT)
        bob.remove_capability("video")
        yield updated
        self.assertFalse(alice.has_capability("video", bob.address))
        self.assertFalse(alice.has_capability("video", "nobody|x"))


class AuthRejectionTests(ClientMixin, ServerTestCase):
    settings = Settings(authentication=True, auth_hook=lambda request: (
        {"rooms": ["staff"]} if request.token == "good" else _reject()))

    @defer.inlineCallbacks
    def test_rejected_credentials_fail_and_stop(self):
        client = self.make_client("mallory", token="bad")
        error = yield self.assertFailure(with_timeout(client.connect()), AuthError)
        self.assertEqual(error.status, 401)
        self.assertIn("no such token", error.message)
        self.assertIsNone(client._service)

    @defer.inlineCallbacks
    def test_accepted_token_gets_rooms_from_the_server(self):
        client = yield self.online("alice", token="good", rooms=["ignored"])
        self.assertEqual(sorted(client.rooms), ["alice", "staff"])


def _reject() -> None:
    raise AuthRejected("no such token")


class CapacityTests(ClientMixin, ServerTestCase):
    settings = Settings(max_connections=1)

    @defer.inlineCallbacks
    def test_full_server_is_a_connect_error_with_the_reason(self):
        yield self.online("alice")
        client = self.make_client("bob")
        error = yield self.assertFailure(with_timeout(client.connect()), ConnectError)
        self.assertIn("the server answered 503", str(error))
        self.assertIn("connection limit", str(error))
        self.assertNotIsInstance(error, AuthError)


class RestartTests(ClientMixin, unittest.TestCase):
    """The client rides out a server restart on the same port."""

    @defer.inlineCallbacks
    def start_server(self, port: int, settings: Optional[Settings] = None):
        server = SympleServer(settings or Settings())
        service = SympleService(server, [server.endpoint(f"tcp:{port}:interface=127.0.0.1")])
        service.startService()
        yield service.listening()
        return service

    @defer.inlineCallbacks
    def test_reconnect_rejoins_rooms_and_rebuilds_roster(self):
        port = free_port()
        self.url = f"ws://127.0.0.1:{port}/"
        service = yield self.start_server(port)
        alice = yield self.online("alice")
        bob = yield self.online("bob")
        yield with_timeout(alice.join("lobby"))
        yield with_timeout(bob.join("lobby"))
        yield eventually(lambda: users(alice) == ["bob"] and users(bob) == ["alice"])
        first_id = alice.peer["id"]
        disconnects = []
        alice.on("disconnect", disconnects.append)

        yield service.stopService()
        yield eventually(lambda: not alice.online and not bob.online, what="both offline")
        self.assertEqual(len(alice.roster), 0)
        service = yield self.start_server(port)
        self.addCleanup(service.stopService)

        yield with_timeout(alice.when_connected(), what="alice back")
        yield eventually(lambda: users(alice) == ["bob"] and users(bob) == ["alice"],
                         what="rosters rebuilt")
        self.assertNotEqual(alice.peer["id"], first_id)
        self.assertIn("lobby", alice.rooms)
        self.assertEqual(disconnects[0]["code"], 1001)
        self.assertTrue(disconnects[0]["reconnecting"])

    @defer.inlineCallbacks
    def test_rejection_after_a_restart_stops_reconnecting(self):
        port = free_port()
        self.url = f"ws://127.0.0.1:{port}/"
        service = yield self.start_server(port)
        alice = yield self.online("alice", token="revoked")
        errors = []
        alice.on("error", errors.append)
        yield service.stopService()
        strict = Settings(authentication=True, auth_hook=lambda request: _reject())
        service = yield self.start_server(port, strict)
        self.addCleanup(service.stopService)
        yield eventually(lambda: errors, what="the rejection")
        self.assertIsInstance(errors[0], AuthError)
        self.assertIsNone(alice._service)
        self.assertFalse(alice.online)

    @defer.inlineCallbacks
    def test_without_reconnect_the_client_stays_offline(self):
        port = free_port()
        self.url = f"ws://127.0.0.1:{port}/"
        service = yield self.start_server(port)
        alice = yield self.online("alice", reconnect=False)
        gone = alice.once("disconnect", timeout=WAIT)
        yield service.stopService()
        info = yield gone
        self.assertFalse(info["reconnecting"])
        self.assertIsNone(alice._service)


class TLSTests(ClientMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        directory = tempfile.mkdtemp()
        key, self.cert = self_signed_cert(directory)
        server = SympleServer(Settings())
        endpoint = server.endpoint(
            f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={self.cert}")
        self.service = SympleService(server, [endpoint])
        self.service.startService()
        ports = yield self.service.listening()
        self.url = f"wss://127.0.0.1:{ports[0].getHost().port}/"
        self.addCleanup(self.service.stopService)

    @defer.inlineCallbacks
    def test_connects_with_the_ca_file(self):
        alice = yield self.online("alice", ca_file=self.cert)
        self.assertTrue(alice.online)

    @defer.inlineCallbacks
    def test_unknown_certificate_is_refused_by_default(self):
        client = self.make_client("alice")
        error = yield self.assertFailure(with_timeout(client.connect()), ConnectError)
        self.assertIn("TLS", str(error))

    @defer.inlineCallbacks
    def test_verification_can_be_turned_off(self):
        alice = yield self.online("alice", verify=False)
        self.assertTrue(alice.online)


class KeepaliveTests(ClientMixin, ServerTestCase):
    @defer.inlineCallbacks
    def test_unanswered_pings_make_the_client_reconnect(self):
        alice = yield self.online("alice", ping_interval=0.2, ping_timeout=0.3)
        first_id = alice.peer["id"]
        stalled = self.server.router.sessions[first_id].link.transport
        stalled.pauseProducing()  # the server stops reading: no pongs
        self.addCleanup(stalled.resumeProducing)
        info = yield with_timeout(alice.once("disconnect"), what="ping timeout")
        self.assertTrue(info["reconnecting"])
        yield with_timeout(alice.when_connected(), what="reconnect")
        self.assertNotEqual(alice.peer["id"], first_id)
        stalled.resumeProducing()


class RosterConvergenceTests(ClientMixin, ServerTestCase):
    """Random joins, leaves and disconnects: every roster equals what the server says it sees."""

    @defer.inlineCallbacks
    def test_rosters_match_server_visibility(self):
        rng = random.Random(4)
        rooms = ["a", "b", "c"]
        clients = []
        for user in ("ann", "ben", "cat", "dan", "ann"):
            clients.append((yield self.online(user, rooms=[rng.choice(rooms)])))
        for step in range(40):
            client = rng.choice(clients)
            action = rng.random()
            if not client.online:
                yield client.connect()
            elif action < 0.45:
                yield client.join(rng.choice(rooms))
            elif action < 0.85:
                yield client.leave(rng.choice(rooms))
            else:
                yield client.disconnect()
                yield eventually(lambda: client.peer is None, what="disconnect")
            for other in clients:
                if other.online:
                    yield other.sync(timeout=WAIT)
            router = self.server.router
            for other in clients:
                if not other.online:
                    continue
                session = router.sessions[other.peer["id"]]
                expected = sorted(peer.address for peer in router.visible(session))
                self.assertEqual(other.roster.addresses(), expected,
                                 f"step {step}: roster of {other.address}")

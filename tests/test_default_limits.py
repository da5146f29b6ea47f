"""The default limits let normal traffic through and stop a flood (docs/operations.md).

With the defaults, on one process, across two processes and with
``--workers 2``:

* a burst of 500 direct messages right after auth, and a message whose
  string body is 64 KiB, arrive intact and in order, with no ``error``;
* a peer flooding a 500-member room is refused (429: its deliveries, 499 per
  frame, run out long before its frames do), then closed with 4429, while
  another member's messages to the room keep reaching the others.

Most room members are bare sockets that authenticate and discard what they
read, so the test pays for the server's work, not for 500 clients parsing.
"""

from __future__ import annotations

import base64
import os
import struct
from typing import Any

import orjson
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial import unittest

from tests.cluster_support import (SOURCE_ROOT, Node, PeersMixin, eventually,
                                   private_redis)
from tests.support import (ServerTestCase, clean_environment, free_port, spawn_twistd,
                           wait_serving)

#: The room of the flood test and its size (the flooder included).
ROOM, MEMBERS = "big", 500
BURST = 500
BODY = "0123456789abcdé\n" * 4096  # 64 Ki characters, some of them escaped or multi-byte


def masked_text_frame(payload: bytes) -> bytes:
    """A client-to-server WebSocket text frame (mask key zero: the payload as is)."""
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return head + b"\0\0\0\0" + payload


class QuietMember(protocol.Protocol):
    """Upgrades, authenticates into ``ROOM`` and throws away everything it reads."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.upgraded = False

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            ("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
             f"Sec-WebSocket-Key: {key}\r\n\r\n").encode())

    def dataReceived(self, data: bytes) -> None:
        if not self.upgraded and b"\r\n\r\n" in data:
            self.upgraded = True
            self.transport.write(masked_text_frame(orjson.dumps(
                {"type": "auth", "user": self.user, "rooms": [ROOM]})))


def online_ids(peer: Any) -> set[str]:
    return {f["data"]["id"] for f in peer.received
            if f.get("type") == "presence" and f["data"].get("online")}


def texts(peer: Any, subtype: str) -> list[Any]:
    return [f.get("data") for f in peer.received
            if f.get("type") == "message" and f.get("subtype") == subtype]


class DefaultLimitChecks(PeersMixin):
    """The scenarios, for servers reached on ``self.ports`` (one port per process, or one)."""

    ports: list[int]

    @defer.inlineCallbacks
    def quiet_members(self, count: int) -> Any:
        members = []
        for number in range(count):
            port = self.ports[number % len(self.ports)]
            member = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port),
                                           QuietMember(f"member{number}"))
            self.addCleanup(member.transport.abortConnection)
            members.append(member)
        return members

    @defer.inlineCallbacks
    def pair(self):
        """bob, then alice, on different processes where there are several."""
        bob = yield self.peer_on(self.ports[-1], "bob", rooms=["pair"])
        alice = yield self.peer_on(self.ports[0], "alice", rooms=["pair"])
        yield eventually(lambda: bob.session_id in online_ids(alice), what="alice to see bob")
        return alice, bob

    @defer.inlineCallbacks
    def test_a_burst_of_500_messages_right_after_auth_arrives_in_order(self):
        alice, bob = yield self.pair()
        for number in range(BURST):
            alice.send_json({"type": "message", "to": bob.address, "subtype": "burst",
                             "data": number, "id": f"m{number}"})
        yield eventually(lambda: len(texts(bob, "burst")) >= BURST, seconds=20,
                         what=f"{BURST} messages")
        self.assertEqual(texts(bob, "burst"), list(range(BURST)))
        yield alice.round_trip()
        self.assertEqual([f for f in alice.received if f.get("type") == "error"], [])

    @defer.inlineCallbacks
    def test_a_message_with_a_64_kib_body_arrives_intact(self):
        alice, bob = yield self.pair()
        alice.send_json({"type": "message", "to": bob.address, "subtype": "big",
                         "data": BODY})
        got = yield bob.expect(lambda f: f.get("subtype") == "big", "the 64 KiB message")
        self.assertEqual(got["data"], BODY)
        self.assertEqual(got["from"], alice.address)
        yield alice.round_trip()
        self.assertEqual([f for f in alice.received if f.get("type") == "error"], [])

    @defer.inlineCallbacks
    def test_a_flood_of_a_500_member_room_is_refused_then_closed_others_go_on(self):
        carol = yield self.peer_on(self.ports[0], "carol", rooms=[ROOM])
        bob = yield self.peer_on(self.ports[-1], "bob", rooms=[ROOM])
        alice = yield self.peer_on(self.ports[0], "alice", rooms=[ROOM])
        yield self.quiet_members(MEMBERS - 3)
        for peer in (carol, bob, alice):
            yield eventually(lambda: len(online_ids(peer)) >= MEMBERS - 1, seconds=60,
                             what="the room to fill")
        sent = 0
        for number in range(400):
            alice.send_json({"type": "message", "to": ROOM, "subtype": "flood",
                             "data": number})
            if number % 8 == 0:
                bob.send_json({"type": "message", "to": ROOM, "subtype": "bob", "data": sent})
                sent += 1
        code, _ = yield alice.wait_closed()
        self.assertEqual(code, 4429)
        refusals = [f for f in alice.received if f.get("type") == "error"]
        self.assertTrue(refusals)
        self.assertEqual({f["status"] for f in refusals}, {429})
        self.assertIn("Delivery budget exceeded", refusals[0]["message"])
        self.assertIn("closing", refusals[-1]["message"])
        # Deliveries ran out first: about 50 000 / 499 = 100 frames passed (plus the
        # 10 a second that refill while the flood is handled), not 1 000.
        yield eventually(lambda: len(texts(carol, "bob")) == sent, seconds=20,
                         what="bob's messages")
        self.assertEqual(texts(carol, "bob"), list(range(sent)))
        # Frames from another process may still be on their way through Redis.
        yield eventually(lambda: len(texts(carol, "flood")) >= 90, seconds=20,
                         what="the flood frames that passed")
        flood = texts(carol, "flood")
        self.assertLessEqual(len(flood), 150)
        # In order and never twice; after the first run of passes, a frame sent once
        # the budget has refilled a little may pass too (its neighbours were refused).
        self.assertEqual(flood, sorted(set(flood)))
        self.assertEqual(flood[:90], list(range(90)))
        self.assertEqual([f for f in bob.received if f.get("type") == "error"], [])
        self.assertIsNone(bob.close_code)


class SingleProcessTests(DefaultLimitChecks, ServerTestCase):
    def setUp(self):
        d = super().setUp()
        d.addCallback(lambda _: setattr(self, "ports", [self.port]))
        return d


class TwoProcessTests(DefaultLimitChecks, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        redis = yield private_redis(self)
        nodes = [Node(self, redis.url), Node(self, redis.url)]
        for node in nodes:
            yield node.start()
        self.ports = [node.port for node in nodes]
        yield eventually(lambda: redis.command("PUBSUB", "NUMSUB",
                                               "symple:cluster:v2:control").split()[1] == "2",
                         seconds=20, what="both processes on the bus")


class WorkersTests(DefaultLimitChecks, unittest.TestCase):
    """One port, two worker processes: the kernel spreads the connections."""

    @defer.inlineCallbacks
    def setUp(self):
        redis = yield private_redis(self)
        port = free_port()
        process = spawn_twistd(
            self, ["symple", "--workers", "2", "--redis", redis.url, "--no-demo",
                   "--listen", f"tcp:{port}:interface=127.0.0.1", "--drain-timeout", "2"],
            env=clean_environment(PYTHONPATH=SOURCE_ROOT))
        yield wait_serving(process, port, seconds=20)
        yield eventually(lambda: redis.command("PUBSUB", "NUMSUB",
                                               "symple:cluster:v2:control").split()[1] == "2",
                         seconds=20, what="two workers on the bus")
        self.ports = [port]

"""Interop with the icey C++ Symple client (its ``sympleconsole`` sample).

Runs only when ``SYMPLE_ICEY_CONSOLE`` names a built ``sympleconsole``
binary (``bash scripts/build-icey-client.sh SOURCE_DIR BUILD_DIR`` builds one
from an icey checkout and prints its path); without it every test here is
skipped, since the client is third-party C++ that is not part of this
repository.

Two C++ clients connect to a real server on a loopback port with the
default settings (and, in ``ClusterTests``, one to each of two servers
sharing a private Redis), each joins "public" (the sample does so once online),
they see each other, exchange messages both ways, join and leave another
room, and quit.  The icey client treats *any* ``error`` frame as fatal (it
drops the connection), so the server must answer nothing in that flow with
one; the test records every frame the clients send and every error the
server builds.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from twisted.internet import defer, error, protocol, reactor
from twisted.trial import unittest

from symple_tx import wire
from tests.cluster_support import InProcessCluster, private_redis
from tests.support import ServerTestCase, eventually

CONSOLE = os.environ.get("SYMPLE_ICEY_CONSOLE")
#: Seconds to wait for the C++ client's side of a step.
STEP = 10.0


class Console(protocol.ProcessProtocol):
    """One running ``sympleconsole``: its output, its stdin, its exit."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.output = ""
        self.exited: defer.Deferred = defer.Deferred()
        self.ended = False

    def outReceived(self, data: bytes) -> None:
        self.output += data.decode("utf-8", "replace")

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended = True
        self.exited.callback(reason.value)

    def type(self, text: str) -> None:
        """Answer the console's prompts, as a person at its terminal would."""
        self.transport.write(text.encode())

    @property
    def session_id(self) -> Optional[str]:
        found = re.search(r"Client online as (\S+)", self.output)
        return found.group(1) if found else None

    def saw(self, address: str) -> bool:
        return f"Peer connected: {address}" in self.output

    def messages(self) -> int:
        """Packets the client emitted to the application as messages."""
        return self.output.count("On message:")

    def stop(self) -> defer.Deferred:
        if not self.ended:
            try:
                self.transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
        return self.exited


def require_console(test: unittest.TestCase) -> None:
    if not CONSOLE:
        raise unittest.SkipTest("set SYMPLE_ICEY_CONSOLE to a built icey sympleconsole "
                                "(scripts/build-icey-client.sh) to run the C++ interop check")
    if not os.access(CONSOLE, os.X_OK):
        test.fail(f"SYMPLE_ICEY_CONSOLE={CONSOLE} is not an executable")


class IceyChecks:
    """The check, against the servers of ``self.servers``; client N uses ``self.ports[N]``."""

    servers: list
    ports: list[int]

    def record(self) -> None:
        """Spy on the servers: what the clients send, every error built, every delivery."""
        self.sent: list[dict] = []
        self.errors: list[bytes] = []
        self.deliveries: list[tuple[dict, set[str]]] = []
        real_error = wire.error

        def spy_error(*args, **kwargs):
            frame = real_error(*args, **kwargs)
            self.errors.append(frame)
            return frame

        self.patch(wire, "error", spy_error)
        for server in self.servers:
            self.spy_on(server)

    def spy_on(self, server: Any) -> None:
        router, authenticator = server.router, server.authenticator
        handle, authenticate, fanout = router.handle, authenticator.authenticate, router.fanout

        def spy_handle(session, frame):
            self.sent.append(dict(frame))  # a copy: routing adds "from"
            return handle(session, frame)

        def spy_authenticate(frame, host):
            self.sent.append(dict(frame))
            return authenticate(frame, host)

        def spy_fanout(recipients, payload, kind, *args, **kwargs):
            recipients = list(recipients)
            self.deliveries.append((wire.loads(payload), {s.id for s in recipients}))
            return fanout(recipients, payload, kind, *args, **kwargs)

        self.patch(router, "handle", spy_handle)
        self.patch(authenticator, "authenticate", spy_authenticate)
        self.patch(router, "fanout", spy_fanout)

    def start_console(self, user: str, port: int) -> Console:
        console = Console(user)
        reactor.spawnProcess(
            console, CONSOLE,
            [CONSOLE, "-host", "127.0.0.1", "-port", str(port), "-user", user,
             "-name", user.title()],
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        self.addCleanup(console.stop)
        return console

    def in_room(self, console: Console, room: str) -> bool:
        return any(s.id == console.session_id for server in self.servers
                   for s in server.router.rooms.get(room, ()))

    def connected(self, console: Console) -> bool:
        return any(console.session_id in server.router.sessions for server in self.servers)

    def delivered(self, text: str, to: Console) -> bool:
        return any(frame.get("type") == "message" and (frame.get("data") or {}).get("text") == text
                   and to.session_id in recipients for frame, recipients in self.deliveries)

    @defer.inlineCallbacks
    def exchange(self, sender: Console, receiver: Console, text: str):
        """``sender`` types a message; the server routes it to ``receiver``, whose client emits it."""
        before = receiver.messages()
        marks = len(self.deliveries)
        sender.type(f"M\n{text}\n")
        yield eventually(lambda: self.delivered(text, receiver), STEP,
                         f"{sender.user}'s message to reach {receiver.user}'s socket")
        yield eventually(lambda: receiver.messages() > before, STEP,
                         f"{receiver.user}'s client to emit the message")
        routed = self.deliveries[marks:]
        # One routing on one process; across processes also the receiving side's.
        messages = [f for f, _ in routed if f.get("type") == "message"]
        self.assertEqual({(m["from"], m["data"]["text"]) for m in messages},
                         {(f"{sender.user}|{sender.session_id}", text)})
        return messages[0]

    @defer.inlineCallbacks
    def test_two_cpp_clients_meet_and_talk_without_an_error(self):
        self.record()
        one = self.start_console("icey-one", self.ports[0])
        yield eventually(lambda: self.in_room(one, "public"), STEP, "icey-one online in public")
        two = self.start_console("icey-two", self.ports[-1])
        yield eventually(lambda: self.in_room(two, "public"), STEP, "icey-two online in public")
        address_one = f"icey-one|{one.session_id}"
        address_two = f"icey-two|{two.session_id}"
        yield eventually(lambda: one.saw(address_two) and two.saw(address_one), STEP,
                         "the clients to see each other")

        yield self.exchange(one, two, "hello from one")
        yield self.exchange(two, one, "hello from two")

        one.type("J\nlobby\n")
        yield eventually(lambda: self.in_room(one, "lobby"), STEP, "icey-one to join lobby")
        one.type("L\nlobby\n")
        yield eventually(lambda: not self.in_room(one, "lobby"), STEP, "icey-one to leave lobby")

        self.assertEqual(self.errors, [], f"error frames in the normal flow; sent: {self.sent}")
        self.assertTrue(self.connected(one) and self.connected(two))
        self.assertNotIn("Client disconnected", one.output + two.output)
        kinds = sorted({f["type"] for f in self.sent})
        self.assertEqual(kinds, ["auth", "join", "leave", "message", "presence"])

        # Quitting sends a close frame; the other side sees the peer go offline.
        one.type("Q\n")
        yield eventually(lambda: not self.connected(one), STEP, "icey-one to quit")
        yield eventually(lambda: "Peer disconnected: " + address_one in two.output, STEP,
                         "icey-two to see icey-one go offline")
        self.assertIn("close", [f["type"] for f in self.sent])
        self.assertEqual(self.errors, [])


class SingleProcessTests(IceyChecks, ServerTestCase):
    def setUp(self):
        require_console(self)
        d = super().setUp()

        def started(_: Any) -> None:
            self.servers, self.ports = [self.server], [self.port]
        return d.addCallback(started)


class ClusterTests(IceyChecks, unittest.TestCase):
    """One C++ client on each of two processes sharing a Redis."""

    @defer.inlineCallbacks
    def setUp(self):
        require_console(self)
        redis = yield private_redis(self)
        cluster = InProcessCluster(redis.url, 2)
        self.addCleanup(cluster.stop)
        yield cluster.start()
        yield eventually(lambda: cluster.nodes_known(2), what="processes to meet")
        self.servers, self.ports = cluster.servers, cluster.ports

"""A Sentinel failover under traffic: real master, replica, three Sentinels, two servers.

The master is killed while peers talk; the Sentinels promote the replica and
the servers, pointed at the Sentinels with ``redis+sentinel://``, follow it
without a restart: the cluster bus, ``symple:broadcast`` and the session
store.  The backend publishing frames and storing tokens (``Emitter``)
follows it too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from typing import Any, Optional

from twisted.internet import defer, reactor
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from symple_tx.emitter import Emitter
from symple_tx.redis import RedisAddress
from symple_tx.redis.sentinel import SentinelEndpoint, SwitchWatcher
from tests.cluster_support import (Node, PeersMixin, RedisServer, _listening, is_message,
                                   presence_of, require_redis_server)
from tests.support import eventually, free_port

SERVICE = "symplemaster"
PASSWORD = "failover-secret"
#: The servers' --node-timeout: longer than the failover, so nobody is announced
#: offline while Redis is being replaced.
NODE_TIMEOUT = 20.0
#: Replication starts at once (diskless, no 5 s wait for more replicas).
REPLICATION = ("--repl-diskless-sync-delay", "0")
#: Cross-process routing and backend frames work again this soon after the promotion.
RECOVERY = 10.0
#: Seconds for the servers to leave a master demoted alive once Sentinel announces
#: the new one (+switch-master); Sentinel demotes the old one only ~10 s later.
SWITCH = 5.0


def sentinel_command(config: str) -> list[str]:
    if shutil.which("redis-sentinel"):
        return ["redis-sentinel", config]
    return ["redis-server", config, "--sentinel"]  # the same binary, in Sentinel mode


class Sentinel:
    """One redis-sentinel on a free port, watching ``master_port``."""

    def __init__(self, master_port: int, directory: str) -> None:
        self.port = free_port()
        self.config = os.path.join(directory, f"sentinel-{self.port}.conf")
        with open(self.config, "w") as f:
            f.write(f"port {self.port}\nbind 127.0.0.1\ndir {directory}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                    f"sentinel auth-pass {SERVICE} {PASSWORD}\n"
                    f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                    f"sentinel failover-timeout {SERVICE} 4000\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n")
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> defer.Deferred:
        self.process = subprocess.Popen(sentinel_command(self.config),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return eventually(lambda: _listening(self.port), what="redis-sentinel to listen")

    def ask(self, *args: str) -> str:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True,
                              text=True, timeout=5).stdout

    def master_port(self) -> Optional[int]:
        reply = self.ask("SENTINEL", "get-master-addr-by-name", SERVICE).split()
        return int(reply[1]) if len(reply) == 2 else None

    def records(self, *args: str) -> list[dict[str, str]]:
        """A reply listing instances (name, value, name, value, ...) as one dict each."""
        lines = self.ask(*args).splitlines()
        found: list[dict[str, str]] = []
        for key, value in zip(lines[::2], lines[1::2]):
            if key == "name":
                found.append({})
            if found:
                found[-1][key] = value
        return found

    def ready(self) -> bool:
        """Knows the replica and both other Sentinels: a failover can be agreed."""
        replicas = self.records("SENTINEL", "replicas", SERVICE)
        return len(self.records("SENTINEL", "sentinels", SERVICE)) == 2 and \
            len(replicas) == 1 and replicas[0].get("flags") == "slave"

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def roster(peer: Any) -> dict[str, list[str]]:
    """user -> the session ids ``peer`` believes online, from the presence it received."""
    online: dict[str, str] = {}
    for frame in peer.received:
        if frame.get("type") != "presence":
            continue
        data = frame["data"]
        if data.get("online"):
            online[data["id"]] = data["user"]
        else:
            online.pop(data["id"], None)
    users: dict[str, list[str]] = {}
    for session_id, user in online.items():
        users.setdefault(user, []).append(session_id)
    return users


class SwitchAnnouncementTests(unittest.TestCase):
    """Which ``+switch-master`` messages close a connection (logic only, fake transport)."""

    def setUp(self):
        address = RedisAddress.parse("redis+sentinel://127.0.0.1:1/svc")
        clock = Clock()
        self.watcher = SwitchWatcher(clock, address)
        self.endpoint = SentinelEndpoint(clock, address, 1.0)
        self.transport = StringTransport()
        self.endpoint.protocol = Protocol()
        self.endpoint.protocol.makeConnection(self.transport)
        self.endpoint.master = ("10.0.0.1", 6379)
        self.watcher.endpoints.add(self.endpoint)

    def test_other_services_garbage_and_our_own_master_leave_it_alone(self):
        for message in (b"other 10.0.0.1 6379 10.0.0.2 6379", b"svc 10.0.0.2", b"",
                        b"svc 10.0.0.1 6379 10.0.0.2 port", "svc 10.0.0.2 6379 10.0.0.1 6379"):
            self.watcher.heard(message)
            self.assertFalse(self.transport.disconnecting, message)

    def test_a_new_master_for_our_service_closes_the_connection(self):
        self.watcher.heard(b"svc 10.0.0.1 6379 10.0.0.2 6380")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.watcher.announced, ("10.0.0.2", 6380))


class SentinelFailoverTests(PeersMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        require_redis_server(self)
        self.directory = tempfile.mkdtemp(prefix="symple-sentinel-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.master = RedisServer(PASSWORD, "--masterauth", PASSWORD, *REPLICATION)
        self.addCleanup(self.master.cleanup)
        yield self.master.start()
        self.replica = RedisServer(PASSWORD, "--masterauth", PASSWORD, *REPLICATION,
                                   "--replicaof", "127.0.0.1", str(self.master.port))
        self.addCleanup(self.replica.cleanup)
        yield self.replica.start()
        yield eventually(lambda: "master_link_status:up" in
                         self.replica.command("INFO", "replication"), what="replication")
        self.sentinels = [Sentinel(self.master.port, self.directory) for _ in range(3)]
        for sentinel in self.sentinels:
            self.addCleanup(sentinel.stop)
            yield sentinel.start()
        yield eventually(lambda: all(s.ready() for s in self.sentinels), seconds=30,
                         what="the Sentinels to know each other and the replica")
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        url = f"redis+sentinel://:{PASSWORD}@{hosts}/{SERVICE}/0"
        self.processes = [Node(self, url, "--node-timeout", str(NODE_TIMEOUT),
                               "--rate-limit", "100000", "--authentication")
                          for _ in range(2)]
        yield defer.gatherResults([p.start() for p in self.processes], consumeErrors=True)
        # the backend: tokens and broadcast frames, through the Sentinels too
        self.backend = Emitter.from_url(url)
        self.addCleanup(self.backend.redis.disconnect)
        for user in ("alice", "bob", "carol", "dave"):
            yield self.backend.create_session(f"token-{user}", {"user": user,
                                                                "rooms": ["lobby"]})
        yield eventually(lambda: self.replica.command("EXISTS", "symple:session:token-dave")
                         .strip() == "1", what="the tokens on the replica")

    def login(self, node: Node, user: str):
        """``user`` on ``node`` with the stored token: in room "lobby"."""
        return self.peer_on(node.port, user, token=f"token-{user}")

    @defer.inlineCallbacks
    def test_servers_follow_the_promoted_replica_without_a_restart(self):
        a, b = self.processes
        alice = yield self.login(a, "alice")
        carol = yield self.login(a, "carol")
        bob = yield self.login(b, "bob")
        for peer, others in ((alice, (bob, carol)), (bob, (alice, carol)),
                             (carol, (alice, bob))):
            for other in others:
                yield eventually(lambda: any(presence_of(other, True)(f)
                                             for f in peer.received), what="presence")

        # alice -> carol, both on process a, every 50 ms throughout
        sent: list[int] = []
        during_outage: list[int] = []
        health: dict[str, list[int]] = {"a": [], "b": []}

        def tick() -> None:
            n = len(sent)
            sent.append(n)
            alice.send_json({"type": "message", "to": carol.address, "data": f"local {n}"})
            if health["a"] and health["a"][-1] == 503:
                during_outage.append(n)

        local = LoopingCall(tick)
        local.start(0.05)
        self.addCleanup(lambda: local.running and local.stop())

        @defer.inlineCallbacks
        def watch_health():
            for name, node in (("a", a), ("b", b)):
                code, _ = yield node.health()
                if not health[name] or health[name][-1] != code:
                    health[name].append(code)

        watcher = LoopingCall(watch_health)
        watcher.start(0.1)
        self.addCleanup(lambda: watcher.running and watcher.stop())

        yield deferLater(reactor, 0.3, lambda: None)
        yield self.master.stop()  # SIGKILL during traffic
        yield eventually(lambda: self.sentinels[0].master_port() == self.replica.port,
                         seconds=30, what="the Sentinels to promote the replica")
        promoted = reactor.seconds()

        # cross-process routing is back within RECOVERY seconds of the promotion
        n = 0
        while not any(is_message("across")(f) for f in bob.received):
            self.assertLess(reactor.seconds() - promoted, RECOVERY,
                            "no frame crossed from process a to b after the failover")
            n += 1
            alice.send_json({"type": "message", "to": bob.address, "data": "across"})
            yield deferLater(reactor, 0.1, lambda: None)
        # ... and so are backend frames on symple:broadcast, on both processes
        while not (any(is_message("announcement")(f) for f in bob.received)
                   and any(is_message("announcement")(f) for f in alice.received)):
            self.assertLess(reactor.seconds() - promoted, RECOVERY,
                            "backend frames did not arrive after the failover")
            yield self.backend.sender("bot|backend").to("lobby").send("announcement")
            yield deferLater(reactor, 0.1, lambda: None)
        # ... and the session store: a token stored before the failover still logs in
        dave = yield self.login(b, "dave")
        yield alice.expect(presence_of(dave, True))
        yield eventually(lambda: health["a"][-1] == 200 and health["b"][-1] == 200,
                         what="/healthz ok on both processes")
        local.stop()
        watcher.stop()

        # /healthz said 503 while the bus was down and is ok now it is back
        for name in ("a", "b"):
            self.assertIn(503, health[name], f"process {name} never reported the outage")
            self.assertEqual(health[name][-1], 200)
        # local traffic never stopped: every frame arrived, in order, some mid-outage
        yield eventually(lambda: sum(1 for f in carol.received
                                     if str(f.get("data", "")).startswith("local ")) == len(sent),
                         what="every local frame")
        got = [int(f["data"].split()[1]) for f in carol.received
               if f.get("type") == "message" and str(f.get("data")).startswith("local ")]
        self.assertEqual(got, sent)
        self.assertTrue(during_outage, "no local frame was sent while Redis was away")
        # the new master now holds both servers' connections
        yield eventually(lambda: self.replica.command("PUBSUB", "NUMSUB", "symple:broadcast")
                         .split() == ["symple:broadcast", "2"], what="broadcast subscribers")

        # no duplicated or phantom peer in any roster, on either process
        bob.send_json({"type": "message", "data": "marker"})
        for peer in (alice, carol, dave):
            yield peer.expect(is_message("marker"))
        expected = {"alice": [alice.session_id], "bob": [bob.session_id],
                    "carol": [carol.session_id], "dave": [dave.session_id]}
        for peer, user in ((alice, "alice"), (bob, "bob"), (carol, "carol"),
                           (dave, "dave")):
            self.assertEqual(roster(peer), {u: ids for u, ids in expected.items() if u != user})
        for node, others in ((a, 2), (b, 2)):
            mirrored = yield node.metric("symple_bus_remote_sessions")
            self.assertEqual(mirrored, others)
        self.assertLessEqual(sum(1 for f in bob.received if is_message("across")(f)), n)

    @defer.inlineCallbacks
    def test_a_master_demoted_alive_is_left_for_the_new_one(self):
        """SENTINEL FAILOVER: the old master keeps running, and is turned into a replica.

        A replica still relays PUBLISH to its own subscribers, so servers left
        on it would go on talking to each other while backends, on the new
        master, reach nobody.  Sentinel announces the new master at once
        (``+switch-master``) but demotes the old one only seconds later: the
        servers move when they hear the announcement, well before that.
        """
        a, b = self.processes
        alice = yield self.login(a, "alice")
        bob = yield self.login(b, "bob")
        yield eventually(lambda: any(presence_of(bob, True)(f) for f in alice.received),
                         what="presence")
        self.assertEqual(subscribers(self.master), 2)
        self.sentinels[0].ask("SENTINEL", "FAILOVER", SERVICE)
        yield eventually(lambda: self.sentinels[0].master_port() == self.replica.port,
                         seconds=30, what="the Sentinels to promote the replica")
        # within a few seconds of the announcement, before the old master is demoted
        yield eventually(lambda: subscribers(self.replica) == 2, seconds=SWITCH,
                         what="both servers subscribed on the new master")
        yield eventually(lambda: subscribers(self.master) == 0, seconds=SWITCH,
                         what="both servers gone from the old master")
        self.assertEqual(role(self.master), "master",
                         "the servers moved only once the old master was demoted")
        announced = reactor.seconds()
        frame = '{"type": "message", "from": "bot|backend", "to": "lobby", "data": "after"}'
        while not (any(is_message("after")(f) for f in alice.received)
                   and any(is_message("after")(f) for f in bob.received)):
            self.assertLess(reactor.seconds() - announced, RECOVERY,
                            "backend frames on the new master did not arrive")
            self.replica.command("PUBLISH", "symple:broadcast", frame)
            yield deferLater(reactor, 0.1, lambda: None)
        # the backend followed the announcement too: its frames reach both servers
        yield self.backend.sender("bot|backend").to("lobby").send("from the backend")
        yield alice.expect(is_message("from the backend"))
        yield bob.expect(is_message("from the backend"))
        # Sentinel turns the old master into a replica later; nobody comes back to it
        yield eventually(lambda: role(self.master) == "slave",
                         seconds=30, what="the old master to become a replica")
        self.assertEqual(subscribers(self.master), 0)
        self.assertEqual(subscribers(self.replica), 2)
        alice.send_json({"type": "message", "to": bob.address, "data": "across"})
        yield bob.expect(is_message("across"))
        self.assertEqual(roster(alice), {"bob": [bob.session_id]})
        self.assertEqual(roster(bob), {"alice": [alice.session_id]})


def role(server: RedisServer) -> str:
    """``master`` or ``slave``; "" while the server cannot answer.

    Sentinel kills the normal clients of a master it demotes (``CLIENT KILL
    TYPE normal``), and a redis-cli asking at that moment loses its connection.
    """
    try:
        info = server.command("INFO", "replication")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        return ""
    for line in info.splitlines():
        if line.startswith("role:"):
            return line[len("role:"):].strip()
    return ""


def subscribers(server: RedisServer) -> int:
    """How many connections are subscribed to ``symple:broadcast`` on ``server``."""
    reply = server.command("PUBSUB", "NUMSUB", "symple:broadcast").split()
    return int(reply[1]) if len(reply) == 2 else -1

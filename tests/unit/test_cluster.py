"""The cluster's pure logic with fakes: message format, liveness, bad input."""

from __future__ import annotations

import orjson
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from symple_tx.cluster import RedisBus, codec, redis_bus
from symple_tx.ratelimit import Budget
from symple_tx.redis import Keys, RedisAddress
from symple_tx.wire import ProtocolError

from tests.fakes import InstantWire, connect, disconnect, make_router


class RecordingBus(RedisBus):
    """The real bus with publishing recorded instead of sent."""

    def __init__(self, node: str, node_timeout: float = 15.0) -> None:
        self.clock = Clock()
        super().__init__(make_router(), RedisAddress(), node_id=node, reactor=self.clock,
                         node_timeout=node_timeout)
        self.router.bus = self
        self.up = True
        InstantWire(self.subscriber)
        self.published: list[tuple[str, bytes]] = []

    def _publish(self, channel: str, message: bytes, kind: str) -> None:
        self.published.append((channel, message))

    def events(self) -> list[dict]:
        return [orjson.loads(m) for _, m in self.published if m[:1] == b"{"]

    def hear(self, channel: str, op: str, node: str, **fields) -> None:
        self.received(channel.encode(), codec.event(op, node, **fields))


def state(session_id: str, user: str, rooms: list[str]) -> dict:
    return {"id": session_id, "user": user, "name": user, "host": "192.0.2.9",
            "type": None, "rooms": rooms, "presence": {"id": session_id, "user": user}}


class CodecTests(unittest.TestCase):
    def test_delivery_round_trip_keeps_payload_bytes(self):
        payload = b'{"type":"message","data":"a\\tb"}'
        message = codec.delivery("message", ["id1", "id2"], payload)
        self.assertEqual(codec.parse_delivery(message), ("message", ["id1", "id2"], payload))

    def test_names_stay_apart_from_the_gem_names(self):
        keys = Keys()
        for name in (keys.control, keys.node("abc"), keys.alive("abc"), keys.room("r"),
                     keys.user("u")):
            self.assertTrue(name.startswith("symple:cluster:"), name)
        self.assertEqual(Keys(cluster_prefix="app:cluster:").control, "app:cluster:v2:control")
        self.assertEqual(Keys("app:").control, "app:cluster:v2:control")

    def test_own_events_are_told_apart_unparsed(self):
        """Redis hands a process its own events back on each of its rooms' channels."""
        mine = codec.own_marker("abc123")
        self.assertTrue(codec.is_from(codec.event("presence", "abc123", s={"id": "x"}), mine))
        self.assertTrue(codec.is_from(codec.event("beat", "abc123"), mine))
        for other in (codec.event("open", "abc1234"), codec.event("open", "abc12"),
                      codec.event("open", "b", s={"node": "abc123"}), b'{"op":"x', b"d\t"):
            self.assertFalse(codec.is_from(other, mine), other)

    def test_parse_event_refuses_non_events(self):
        for message in (b"", b"[1]", b'{"op": 1, "node": "x"}', b'{"op": "beat"}', b"\xff"):
            self.assertIsNone(codec.parse_event(message), message)


class MembershipTests(unittest.TestCase):
    def setUp(self):
        self.bus = RecordingBus("me")
        self.control = self.bus.channels.control
        self.alice, self.alice_link = connect(self.bus.router, "alice", ["lobby"])
        self.alice_link.take()
        self.bus.hear(self.control, "sync", "other",
                      sessions=[state("b1", "bob", ["lobby"])], reply=False)

    def test_sync_mirrors_and_announces_to_local_sessions(self):
        [frame] = self.alice_link.take()
        self.assertEqual((frame["type"], frame["data"]["id"], frame["data"]["online"]),
                         ("presence", "b1", True))
        self.assertEqual(self.bus.router.sessions["b1"].node, "other")
        self.assertEqual(self.bus.router.local_sessions(), 1)

    def test_sessions_sharing_no_room_with_ours_are_not_mirrored(self):
        """The mirror holds only sessions a local session shares a room with."""
        self.bus.hear(self.control, "open", "other", s=state("c1", "carol", ["attic"]))
        self.bus.hear(self.control, "open", "other", s=state("c2", "cid", ["attic", "lobby"]))
        sessions = self.bus.router.sessions
        self.assertNotIn("c1", sessions)
        self.assertIn("c2", sessions)
        self.assertEqual(self.bus.remote_sessions(), 2)  # bob and cid
        # cid leaves the lobby: nobody here sees it any more
        self.alice_link.take()
        self.bus.hear(self.control, "leave", "other", s=state("c2", "cid", ["attic"]))
        self.assertNotIn("c2", sessions)
        [frame] = self.alice_link.take()
        self.assertEqual((frame["data"]["id"], frame["data"]["online"]), ("c2", False))

    def test_joining_a_room_asks_its_members_processes_for_them(self):
        self.bus.published.clear()
        self.bus.router.handle(self.alice, {"type": "join", "room": "attic"})
        attic = self.bus.channels.room("attic")
        self.assertIn(attic.encode(), self.bus.subscriber.handlers)
        requests = [orjson.loads(m) for c, m in self.bus.published
                    if c == attic and orjson.loads(m)["op"] == "members"]
        self.assertEqual([(r["kind"], r["name"], r["ask"], [s["id"] for s in r["sessions"]])
                          for r in requests], [("room", "attic", True, [self.alice.id])])
        self.alice_link.take()
        self.bus.hear(self.bus.inbox, "state", "other", snap="", page=0, pages=1, add=True,
                      more=False, sessions=[state("c1", "carol", ["attic"])])
        [frame] = self.alice_link.take()
        self.assertEqual((frame["data"]["id"], frame["data"]["online"]), ("c1", True))
        # an answer is added to the mirror: bob, not in it, stays
        self.assertEqual(self.bus.remote_sessions(), 2)
        # the last local member leaves: the room's channel and its members go
        self.bus.router.handle(self.alice, {"type": "leave", "room": "attic"})
        self.assertNotIn(attic.encode(), self.bus.subscriber.handlers)
        self.assertNotIn("c1", self.bus.router.sessions)
        self.assertIn("b1", self.bus.router.sessions)

    def test_a_members_request_is_answered_with_our_members_of_that_room(self):
        self.bus.published.clear()
        self.bus.hear(self.bus.channels.room("lobby"), "members", "other", kind="room",
                      name="lobby", ask=True, sessions=[state("b2", "bob", ["lobby"])])
        self.assertIn("b2", self.bus.router.sessions)
        [(channel, message)] = self.bus.published
        self.assertEqual(channel, self.bus.channels.node("other"))
        event = orjson.loads(message)
        self.assertEqual((event["op"], event["add"], [s["id"] for s in event["sessions"]]),
                         ("state", True, [self.alice.id]))
        # a room we have no member in is not answered
        self.bus.published.clear()
        self.bus.hear(self.bus.channels.room("attic"), "members", "other", kind="room",
                      name="attic", ask=True, sessions=[])
        self.assertEqual(self.bus.published, [])

    def test_changes_are_told_on_each_room_of_the_session(self):
        self.bus.published.clear()
        self.bus.router.handle(self.alice, {"type": "join", "room": "attic"})
        self.bus.published.clear()
        self.bus.router.handle(self.alice, {"type": "leave", "room": "lobby"})
        keys = self.bus.channels
        leaves = [(c, orjson.loads(m)) for c, m in self.bus.published
                  if orjson.loads(m)["op"] == "leave"]
        self.assertEqual(sorted(c for c, _ in leaves),
                         sorted([keys.user("alice"), keys.room("attic"), keys.room("lobby")]))
        self.assertEqual({tuple(e["s"]["rooms"]) for _, e in leaves}, {("attic",)})
        self.bus.published.clear()
        disconnect(self.bus.router, self.alice)
        self.assertEqual(sorted(c for c, _ in self.bus.published),
                         sorted([keys.user("alice"), keys.room("attic")]))
        self.assertEqual(self.bus.subscriber.handlers.keys(),
                         {self.control.encode(), self.bus.inbox.encode()})
        self.assertEqual(self.bus.remote_sessions(), 0)

    def test_routed_frames_for_mirrored_sessions_are_forwarded_once_per_process(self):
        self.bus.hear(self.control, "open", "other", s=state("b2", "bob", ["lobby"]))
        self.bus.published.clear()
        self.bus.router.handle(self.alice, {"type": "message", "data": 1})
        [(channel, message)] = self.bus.published
        self.assertEqual(channel, self.bus.channels.node("other"))
        kind, ids, payload = codec.parse_delivery(message)
        self.assertEqual((kind, sorted(ids)), ("message", ["b1", "b2"]))
        self.assertEqual(orjson.loads(payload)["from"], self.alice.address)

    def test_silent_process_is_dropped_after_the_timeout(self):
        self.alice_link.take()
        self.bus._reaper.start(1.0, now=False)
        self.addCleanup(self.bus._reaper.stop)
        self.bus.clock.advance(13.0)
        self.assertIn("b1", self.bus.router.sessions)
        self.bus.clock.advance(2.0)
        self.assertNotIn("b1", self.bus.router.sessions)
        [frame] = self.alice_link.take()
        self.assertEqual((frame["data"]["id"], frame["data"]["online"]), ("b1", False))

    def test_heartbeats_keep_a_process_alive(self):
        self.bus._reaper.start(1.0, now=False)
        self.addCleanup(self.bus._reaper.stop)
        for _ in range(10):
            self.bus.clock.advance(3.0)
            self.bus.hear(self.control, "beat", "other")
        self.assertIn("b1", self.bus.router.sessions)

    def test_an_unknown_process_is_asked_for_its_state(self):
        self.bus.published.clear()
        self.bus.hear(self.control, "join", "newcomer", id="x", room="lobby")
        [(channel, message)] = self.bus.published
        self.assertEqual(channel, self.bus.channels.node("newcomer"))
        event = orjson.loads(message)
        self.assertEqual((event["op"], event["reply"]), ("sync", True))
        self.assertEqual([s["id"] for s in event["sessions"]], [self.alice.id])

    def test_bye_announces_offline_at_once(self):
        self.alice_link.take()
        self.bus.hear(self.control, "bye", "other")
        [frame] = self.alice_link.take()
        self.assertFalse(frame["data"]["online"])
        self.assertEqual(self.bus.membership.nodes, {})

    def test_garbage_is_counted_and_never_crashes(self):
        self.alice_link.take()
        before = dict(self.bus.router.sessions)
        for message in (b"junk", b"d\tmessage", b'{"op":"open","node":"other","s":{"id":5}}',
                        b'{"op":"open","node":"other","s":{"id":"x","user":"u|v","rooms":7}}',
                        b'{"op":"join","node":"other","id":"b1","room":""}',
                        b'{"op":"open","node":"other","s":{"id":"y","user":"u","name":"u",'
                        b'"host":"h","rooms":7}}'):
            self.bus.received(self.control.encode(), message)
        self.assertEqual(self.bus.router.sessions, before)
        # a sync without usable states means the process has no sessions
        self.bus.hear(self.control, "sync", "other", sessions=[1, "x"], reply=False)
        self.assertEqual(set(self.bus.router.sessions), set(before) - {"b1"})
        self.assertGreaterEqual(self.bus.metrics.invalid._value.get(), 4)
        self.flushLoggedErrors()

    def test_own_events_are_ignored(self):
        self.alice_link.take()
        self.bus.hear(self.control, "close", "me", id=self.alice.id)
        self.assertIn(self.alice.id, self.bus.router.sessions)


class DirectTests(unittest.TestCase):
    """Frames for a ``user|id`` the sending process does not know travel on the
    user's channel; only the holder of the session delivers them."""

    def setUp(self):
        self.bus = RecordingBus("me")
        self.alice, self.alice_link = connect(self.bus.router, "alice", ["r"])
        self.alice_link.take()
        self.bus.published.clear()

    def drops(self, reason: str) -> float:
        return self.bus.router.metrics.registry.get_sample_value(
            "symple_drops_total", {"reason": reason}) or 0

    def test_a_frame_for_an_unknown_address_is_published_on_the_users_channel(self):
        self.alice.budget = Budget(10, 1, 10.0, lambda: 0.0)
        self.bus.router.handle(self.alice, {"type": "message", "to": "bob|b1", "data": 1})
        [(channel, message)] = self.bus.published
        self.assertEqual(channel, self.bus.channels.user("bob"))
        session_id, user, kind, sender, rooms, payload = codec.parse_direct(message)
        self.assertEqual((session_id, user, kind, sender, rooms),
                         ("b1", "bob", "message", "alice", ["r"]))
        self.assertEqual(orjson.loads(payload),
                         {"type": "message", "to": "bob|b1", "data": 1,
                          "from": self.alice.address})
        self.assertEqual(self.drops("no_recipient"), 0)
        # charged as one delivery
        with self.assertRaises(ProtocolError):
            self.bus.router.handle(self.alice, {"type": "message", "to": "bob|b1"})
        self.assertEqual(len(self.bus.published), 1)

    def test_the_holder_delivers_a_direct_frame_once_and_checks_the_room(self):
        bob, bob_link = connect(self.bus.router, "bob", ["r"])
        eve, eve_link = connect(self.bus.router, "eve", ["s"])
        for link in (bob_link, eve_link):
            link.take()
        channel = self.bus.channels.user("bob").encode()
        payload = b'{"type":"message","from":"carol|c1","data":"x"}'
        sender = connect(make_router(), "carol", ["r", "q"])[0]
        self.bus.received(channel, codec.direct("other", "bob", bob.id, "message", sender,
                                                payload))
        self.assertEqual(bob_link.sent, [payload])
        self.bus.received(channel, codec.direct("other", "eve", eve.id, "message", sender,
                                                payload))
        self.assertEqual(eve_link.sent, [])
        self.assertEqual(self.drops("permission"), 1)
        self.assertEqual(self.bus.metrics.got["delivery"]._value.get(), 2)

    def test_our_own_direct_frames_heard_back_are_dropped_unread(self):
        bob, bob_link = connect(self.bus.router, "bob", ["r"])
        bob_link.take()
        # even one naming a session of ours (which we never forward) is not delivered
        self.bus.received(self.bus.channels.user("bob").encode(),
                          codec.direct("me", "bob", bob.id, "message", self.alice, b"{}"))
        self.assertEqual(bob_link.sent, [])
        self.assertEqual(self.drops("gone") + self.drops("permission"), 0)
        # a process whose id begins with ours is another process
        self.bus.received(self.bus.channels.user("bob").encode(),
                          codec.direct("me2", "bob", bob.id, "message", self.alice, b"{}"))
        self.assertEqual(bob_link.sent, [b"{}"])

    def test_malformed_direct_frames_are_counted_and_never_crash(self):
        channel = self.bus.channels.user("alice").encode()
        for message in (b"u", b"u{}\t{}", b'u{"node":"x","id":1}\t{}', b"u[1]\t{}",
                        b'u{"node":"x","id":"a","user":"u","kind":"m","from":"f",'
                        b'"rooms":[1]}\t{}', b'u{"node":"x"'):
            self.bus.received(channel, message)
        self.assertEqual(self.bus.metrics.invalid._value.get(), 6)
        self.assertEqual(self.alice_link.sent, [])
        self.flushLoggedErrors()


class _CountingRedis:
    """A publishing connection whose PUBLISH reaches ``listeners`` subscribers."""

    def __init__(self, listeners: int) -> None:
        self.replyQueue: DeferredQueue = DeferredQueue()
        self.listeners = listeners

    def publish(self, channel: str, message: bytes) -> Deferred:
        return succeed(self.listeners)


class DirectListenersTests(unittest.TestCase):
    """A direct frame that no other process heard names no session anywhere."""

    def drops_after(self, listeners: int, own_session_of_bob: bool) -> float:
        router = make_router()
        bus = router.bus = RedisBus(router, RedisAddress(), node_id="me", reactor=Clock())
        InstantWire(bus.subscriber)
        bus.up = True
        alice = connect(bus.router, "alice", ["r"])[0]
        if own_session_of_bob:
            connect(bus.router, "bob")
        bus.publisher.protocol = _CountingRedis(listeners)
        bus.router.handle(alice, {"type": "message", "to": "bob|b1"})
        return bus.router.metrics.registry.get_sample_value(
            "symple_drops_total", {"reason": "no_recipient"}) or 0

    def test_no_listener_but_us_counts_no_recipient(self):
        self.assertEqual(self.drops_after(0, False), 1)
        self.assertEqual(self.drops_after(1, True), 1)
        self.assertEqual(self.drops_after(1, False), 0)
        self.assertEqual(self.drops_after(2, True), 0)


class _SilentRedis:
    """A publishing connection whose Redis never answers."""

    def __init__(self) -> None:
        self.replyQueue: DeferredQueue = DeferredQueue()
        self.published = 0

    def publish(self, channel: str, message: bytes) -> Deferred:
        self.published += 1
        d = Deferred()
        self.replyQueue.waiting.append(d)
        return d


class BackpressureTests(unittest.TestCase):
    def test_publishes_stop_queueing_when_redis_stops_answering(self):
        self.patch(redis_bus, "MAX_IN_FLIGHT", 5)
        bus = RedisBus(make_router(), RedisAddress(), node_id="me", reactor=Clock())
        silent = _SilentRedis()
        bus.publisher.protocol = silent
        for _ in range(8):
            bus.forward({"other": ["x"]}, b"{}", "message")
        self.assertEqual(silent.published, 5)
        self.assertEqual(bus.metrics.lost.labels("delivery")._value.get(), 3)


class DefaultTimingTests(unittest.TestCase):
    """The default node timeout: a crash is noticed within 5 s, a 2 s stall is not one."""

    def setUp(self):
        timeout = redis_bus.NODE_TIMEOUT
        self.bus = RecordingBus("me", node_timeout=timeout)
        self.control = self.bus.channels.control
        self.alice, self.alice_link = connect(self.bus.router, "alice", ["lobby"])
        self.bus.hear(self.control, "sync", "other",
                      sessions=[state("b1", "bob", ["lobby"])], reply=False)
        self.alice_link.take()
        self.bus._reaper.start(redis_bus.reaper_interval(timeout), now=False)
        self.addCleanup(self.bus._reaper.stop)

    def beat(self, seconds: float) -> None:
        """The other process beats on schedule for ``seconds``."""
        interval = redis_bus.heartbeat_interval(redis_bus.NODE_TIMEOUT)
        for _ in range(round(seconds / interval)):
            self.bus.clock.advance(interval)
            self.bus.hear(self.control, "beat", "other")

    def test_the_defaults(self):
        self.assertEqual(redis_bus.NODE_TIMEOUT, 4.0)
        self.assertEqual(redis_bus.heartbeat_interval(redis_bus.NODE_TIMEOUT), 0.5)
        self.assertEqual(redis_bus.heartbeat_interval(60.0), 1.0)

    def test_a_dead_process_is_announced_offline_within_the_timeout(self):
        self.beat(3.0)
        died = self.bus.clock.seconds()
        while "b1" in self.bus.router.sessions:
            self.bus.clock.advance(0.01)
            self.assertLess(self.bus.clock.seconds() - died, 5.0, "never announced")
        self.assertLessEqual(self.bus.clock.seconds() - died, redis_bus.NODE_TIMEOUT)
        [frame] = self.alice_link.take()
        self.assertEqual((frame["data"]["id"], frame["data"]["online"]), ("b1", False))

    def test_the_other_process_stalling_for_two_seconds_is_no_alarm(self):
        self.beat(2.0)
        for _ in range(200):  # it is stalled: no beats for 2 s
            self.bus.clock.advance(0.01)
        self.beat(0.5)  # it wakes up and beats again
        self.beat(5.0)
        self.assertIn("b1", self.bus.router.sessions)
        self.assertEqual(self.alice_link.take(), [])

    def test_our_own_loop_stalling_for_two_seconds_is_no_alarm(self):
        self.beat(2.0)
        # Our timers run late, all at once, before the beats that queued meanwhile.
        self.bus.clock.advance(2.5)
        self.bus.hear(self.control, "beat", "other")
        self.beat(5.0)
        self.assertIn("b1", self.bus.router.sessions)
        self.assertEqual(self.alice_link.take(), [])


class StalePresenceTests(unittest.TestCase):
    """A presence another process routed before the recipient left the room
    must not put the sender back into the recipient's roster."""

    def test_forwarded_presence_for_a_recipient_that_left_is_dropped(self):
        bus = RecordingBus("me")
        control = bus.channels.control
        alice, link = connect(bus.router, "alice", ["lobby"])
        bus.hear(control, "sync", "other", sessions=[state("b1", "bob", ["lobby"])],
                 reply=False)
        bob_address = bus.router.sessions["b1"].address
        presence = orjson.dumps({"type": "presence", "from": bob_address,
                                 "data": {"id": "b1", "user": "bob", "online": True}})
        bus.router.handle(alice, {"type": "leave", "room": "lobby"})
        link.take()  # leave:ok and bob's offline presence
        bus.received(bus.channels.node("me").encode(),
                     codec.delivery("presence", [alice.id], presence))
        self.assertEqual(link.take(), [])
        self.assertEqual(bus.router.metrics.registry.get_sample_value(
            "symple_drops_total", {"reason": "stale_presence"}), 1)
        # While they share a room, the same frame is delivered.
        bus.router.handle(alice, {"type": "join", "room": "lobby"})
        bus.hear(bus.inbox, "state", "other", snap="", page=0, pages=1, add=True,
                 more=False, sessions=[state("b1", "bob", ["lobby"])])
        link.take()
        bus.received(bus.channels.node("me").encode(),
                     codec.delivery("presence", [alice.id], presence))
        [frame] = link.take()
        self.assertEqual(frame["from"], bob_address)


class _Transport:
    def __init__(self) -> None:
        self.lost = False

    def loseConnection(self) -> None:
        self.lost = True


class _Protocol:
    def __init__(self) -> None:
        self.transport = _Transport()


class DemotedMasterTests(unittest.TestCase):
    """A heartbeat refused with READONLY: through Sentinel, the bus reconnects."""

    def setUp(self):
        self.bus = RecordingBus("me")
        self.bus.publisher.protocol = _Protocol()
        self.bus.subscriber.protocol = _Protocol()

    def refuse(self, message: str) -> None:
        from twisted.python.failure import Failure
        self.bus._beat_failed(Failure(Exception(message)), self.bus.publisher.protocol)

    def lost(self) -> list[bool]:
        return [c.protocol.transport.lost for c in (self.bus.publisher, self.bus.subscriber)]

    def test_readonly_closes_both_connections_when_following_the_master(self):
        self.bus._follows_master = True
        self.refuse("READONLY You can't write against a read only replica.")
        self.assertEqual(self.lost(), [True, True])

    def test_other_refusals_and_fixed_addresses_keep_the_connections(self):
        self.bus._follows_master = True
        self.refuse("OOM command not allowed")
        self.bus._follows_master = False  # a plain redis:// address has nowhere else to go
        self.refuse("READONLY You can't write against a read only replica.")
        self.assertEqual(self.lost(), [False, False])

    def test_sentinel_addresses_follow_the_master(self):
        from symple_tx.redis.sentinel import SentinelAddress
        self.assertTrue(SentinelAddress(sentinels=(("h", 1),), service="s").follows_master)
        self.assertFalse(getattr(RedisAddress(), "follows_master", False))

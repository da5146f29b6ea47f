"""Frames published on ``<prefix>broadcast`` reach local sessions (docs/spec.md §9)."""

from __future__ import annotations

import secrets

import orjson
from twisted.internet import defer
from twisted.trial import unittest

from symple_tx.broadcast import Broadcast
from symple_tx.config import Settings
from symple_tx.emitter import Emitter, connect_redis
from symple_tx.redis import RedisAddress
from symple_tx.redis.connect import Subscription
from symple_tx.session import Identity, Session
from tests.cluster_support import private_redis
from tests.fakes import FakeLink, connect, make_router
from tests.support import ServerTestCase, eventually, redis_required, with_timeout


class DeliverTrustedTests(unittest.TestCase):
    """``Router.deliver_trusted`` with fake links."""

    def setUp(self):
        self.router = make_router()
        self.alice, self.alice_link = connect(self.router, "alice", ["team"])
        self.bob, self.bob_link = connect(self.router, "bob", ["team", "ops"])
        self.carol, self.carol_link = connect(self.router, "carol", ["ops"])
        for link in (self.alice_link, self.bob_link, self.carol_link):
            link.take()

    def deliver(self, **frame):
        return self.router.deliver_trusted({"type": "message", "from": "backend", **frame})

    def test_address_reaches_that_session_only_and_keeps_from(self):
        self.assertEqual(self.deliver(to=self.carol.address, data=1, token="t"), 1)
        [frame] = self.carol_link.take()
        self.assertEqual(frame["from"], "backend")
        self.assertNotIn("token", frame)
        self.assertEqual(self.alice_link.take() + self.bob_link.take(), [])

    def test_address_with_the_wrong_user_reaches_nobody(self):
        self.assertEqual(self.deliver(to=f"bob|{self.carol.id}"), 0)
        self.assertEqual(self.carol_link.take(), [])

    def test_user_room_and_named_room(self):
        self.assertEqual(self.deliver(to="alice"), 1)
        self.assertEqual(len(self.alice_link.take()), 1)
        self.assertEqual(self.deliver(to="ops"), 2)
        self.assertEqual((len(self.bob_link.take()), len(self.carol_link.take())), (1, 1))

    def test_room_array_delivers_once_per_recipient(self):
        self.assertEqual(self.deliver(to=["team", "ops", "nowhere", 5]), 3)
        for link in (self.alice_link, self.bob_link, self.carol_link):
            self.assertEqual(len(link.take()), 1)

    def test_sessions_of_other_processes_are_theirs_to_serve(self):
        """Every process receives the broadcast frame; each counts and serves its own."""
        remote_link = FakeLink()
        remote = Session(remote_link, Identity(user="dave", name="Dave"), "10.0.0.9",
                         node="other-process")
        self.router.admit(remote, ["dave", "ops"])
        self.assertEqual(self.deliver(to="ops"), 2)
        self.assertEqual(remote_link.take(), [])

    def test_unroutable_frames_are_dropped(self):
        for frame in ({"type": "message"}, {"type": "message", "to": 7},
                      {"to": "team"}, {"type": "", "to": "team"}, {"type": 3, "to": "team"}):
            self.assertEqual(self.router.deliver_trusted(frame), 0)
        self.assertEqual(self.alice_link.take() + self.bob_link.take(), [])


class ReceivedTests(unittest.TestCase):
    """What the subscriber does with each published payload (no Redis needed)."""

    def test_garbage_is_counted_and_dropped_and_frames_delivered(self):
        router = make_router()
        session, link = connect(router, "alice")
        link.take()
        subscriber = Broadcast(router)
        self.assertEqual(subscriber.received("{not json"), 0)
        self.assertEqual(subscriber.received("[1, 2]"), 0)
        self.assertEqual(subscriber.received(None), 0)
        self.assertEqual(subscriber.received(orjson.dumps({"type": "event", "to": "alice"})), 1)
        self.assertEqual([f["type"] for f in link.take()], ["event"])


class EmitterToClientTests(ServerTestCase):
    """An Emitter frame crosses real Redis and a real server to a WebSocket peer."""

    def make_settings(self):
        redis_required(self)
        self.prefix = f"test{secrets.token_hex(4)}:"
        return Settings(redis_url="redis://127.0.0.1:6379", key_prefix=self.prefix)

    @defer.inlineCallbacks
    def test_emitter_frame_reaches_client(self):
        yield with_timeout(self.server.router.bus.subscriber.when_subscribed(), what="subscription")
        alice = yield self.peer("alice", rooms=["team"])
        redis = connect_redis("redis://127.0.0.1:6379")
        self.addCleanup(redis.disconnect)
        emitter = Emitter(redis, channel=self.prefix + "broadcast").sender("bot|backend")
        yield redis.publish(self.prefix + "broadcast", "not json")
        receivers = yield emitter.to("team").send({"text": "hello"}, subtype="note")
        self.assertEqual(receivers, 1)
        frame = yield alice.expect("message")
        self.assertEqual(frame["from"], "bot|backend")
        self.assertEqual(frame["to"], "team")
        self.assertEqual(frame["data"], {"text": "hello"})
        self.assertEqual(frame["subtype"], "note")
        yield emitter.to(alice.address).send_event("refresh")
        frame = yield alice.expect("event")
        self.assertEqual(frame["name"], "refresh")


class ResubscribeTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_subscription_survives_a_redis_restart(self):
        redis = yield private_redis(self)
        router = make_router()
        session, link = connect(router, "alice")
        subscriber = Subscription(RedisAddress(port=redis.port))
        subscriber.add("symple:broadcast", Broadcast(router).received)
        subscriber.start()
        self.addCleanup(subscriber.stop)
        yield with_timeout(subscriber.when_subscribed(1), what="first subscription")

        yield redis.stop()
        yield redis.start()
        yield with_timeout(subscriber.when_subscribed(2), seconds=15, what="resubscription")
        publisher = connect_redis(f"redis://127.0.0.1:{redis.port}")
        self.addCleanup(publisher.disconnect)
        link.take()
        yield Emitter(publisher).to("alice").send("after restart")
        yield eventually(lambda: any(f.get("data") == "after restart" for f in link.take()),
                         what="frame after the restart")

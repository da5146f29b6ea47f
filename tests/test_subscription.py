"""``Subscription`` against a real Redis: channels come and go while connected.

The cluster bus subscribes to a room's channel when a local session enters
the room and must know when Redis has confirmed it: only what is published
after the confirmation is sure to arrive (docs/clustering.md).
"""

from __future__ import annotations

import secrets

from twisted.internet import defer
from twisted.trial import unittest

from symple_tx.emitter import connect_redis
from symple_tx.redis import RedisAddress
from symple_tx.redis.connect import Subscription
from tests.cluster_support import private_redis
from tests.support import eventually, with_timeout


class DynamicChannelTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self):
        self.server = yield private_redis(self)
        self.prefix = f"test:{secrets.token_hex(4)}:"
        self.got: list[tuple[str, bytes]] = []
        self.subscriber = Subscription(RedisAddress(port=self.server.port))
        self.subscriber.add(self.prefix + "first", self.handler("first"))
        self.subscriber.start()
        self.addCleanup(self.subscriber.stop)
        yield with_timeout(self.subscriber.when_subscribed(), what="subscription")
        self.redis = connect_redis(self.server.url)
        self.addCleanup(self.redis.disconnect)

    def handler(self, name: str):
        return lambda message: self.got.append((name, message))

    def receivers(self, channel: str) -> int:
        return int(self.server.command("PUBSUB", "NUMSUB", self.prefix + channel).split()[1])

    @defer.inlineCallbacks
    def test_a_channel_added_later_is_confirmed_then_received(self):
        d = self.subscriber.add(self.prefix + "later", self.handler("later"))
        self.assertFalse(self.subscriber.is_subscribed(self.prefix + "later"))
        yield with_timeout(d, what="confirmation")
        self.assertTrue(self.subscriber.is_subscribed(self.prefix + "later"))
        yield self.redis.publish(self.prefix + "later", "hello")
        yield eventually(lambda: self.got, what="message")
        self.assertEqual(self.got, [("later", b"hello")])
        # adding it again confirms at once
        self.assertTrue((yield self.subscriber.add(self.prefix + "later", self.handler("x"))))

    @defer.inlineCallbacks
    def test_a_removed_channel_is_unsubscribed(self):
        yield self.subscriber.add(self.prefix + "gone", self.handler("gone"))
        self.assertEqual(self.receivers("gone"), 1)
        self.subscriber.remove(self.prefix + "gone")
        self.assertFalse(self.subscriber.is_subscribed(self.prefix + "gone"))
        yield eventually(lambda: self.receivers("gone") == 0, what="unsubscribed")
        yield self.redis.publish(self.prefix + "gone", "late")
        yield self.redis.publish(self.prefix + "first", "marker")
        yield eventually(lambda: self.got, what="marker")
        self.assertEqual(self.got, [("first", b"marker")])

    @defer.inlineCallbacks
    def test_remove_and_add_again_at_once_ends_subscribed(self):
        """Confirmations are counted per channel: the last command sent wins."""
        channel = self.prefix + "flip"
        yield self.subscriber.add(channel, self.handler("flip"))
        self.subscriber.remove(channel)
        d = self.subscriber.add(channel, self.handler("flip"))
        self.subscriber.remove(channel)
        d = self.subscriber.add(channel, self.handler("flip"))
        self.assertFalse(self.subscriber.is_subscribed(channel))
        yield with_timeout(d, what="confirmation")
        self.assertTrue(self.subscriber.is_subscribed(channel))
        yield self.redis.publish(channel, "still here")
        yield eventually(lambda: self.got, what="message")
        self.assertEqual(self.got, [("flip", b"still here")])

    @defer.inlineCallbacks
    def test_many_channels_in_flight_at_once(self):
        names = [f"{self.prefix}many:{i}" for i in range(50)]
        confirmations = [self.subscriber.add(n, self.handler(n)) for n in names]
        for n in names[::2]:
            self.subscriber.remove(n)
        yield with_timeout(defer.gatherResults(confirmations[1::2]), what="confirmations")
        for n in names:
            yield self.redis.publish(n, n)
        yield self.redis.publish(self.prefix + "first", "end")
        yield eventually(lambda: ("first", b"end") in self.got, what="the last message")
        self.assertEqual([name for name, _ in self.got[:-1]], names[1::2])


class ResubscriptionTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_channels_added_and_removed_while_redis_is_away(self):
        redis = yield private_redis(self)
        subscriber = Subscription(RedisAddress(port=redis.port))
        subscriber.add("kept", lambda m: None)
        subscriber.add("dropped", lambda m: None)
        subscriber.start()
        self.addCleanup(subscriber.stop)
        yield with_timeout(subscriber.when_subscribed(1), what="first subscription")
        yield redis.stop()
        yield eventually(lambda: subscriber.protocol is None, what="connection lost")
        self.assertFalse(subscriber.is_subscribed("kept"))
        subscriber.remove("dropped")
        added = subscriber.add("added", lambda m: None)
        yield redis.start()
        yield with_timeout(added, seconds=15, what="resubscription")
        self.assertTrue(subscriber.is_subscribed("kept"))
        channels = redis.command("PUBSUB", "CHANNELS").split()
        self.assertEqual(sorted(channels), ["added", "kept"])

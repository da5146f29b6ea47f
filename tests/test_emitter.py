"""Emitter and Sessions against a real Redis, and token auth through the server."""

from __future__ import annotations

import secrets

import orjson
import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import ClientCreator
from twisted.trial import unittest

from symple_tx.client import AuthError, SympleClient
from symple_tx.config import Settings
from symple_tx.emitter import COMMAND_TIMEOUT, Emitter, RedisUnavailable, Sessions, connect_redis
from tests.support import ServerTestCase, free_port, redis_required, silent_server, with_timeout

REDIS = "redis://127.0.0.1:6379"


class RedisTestCase(unittest.TestCase):
    def setUp(self):
        redis_required(self)
        self.redis = connect_redis(REDIS)
        self.addCleanup(self.redis.disconnect)
        self.prefix = f"test{secrets.token_hex(4)}:"
        self.sessions = Sessions(self.redis, self.prefix + "session:")


class SessionsTests(RedisTestCase):
    @defer.inlineCallbacks
    def test_set_get_touch_exists_delete(self):
        token = "t0k"
        session = {"user": "alice", "name": "Alice", "rooms": ["team-a"], "plan": "007"}
        yield self.sessions.set(token, session, ttl=100)
        raw = yield self.redis.get(self.prefix + "session:" + token)
        self.assertEqual(raw, '{"user":"alice","name":"Alice","rooms":["team-a"],"plan":"007"}')
        stored = yield self.sessions.get(token)
        self.assertEqual(stored, session)
        ttl = yield self.redis.ttl(self.prefix + "session:" + token)
        self.assertTrue(0 < int(ttl) <= 100)
        touched = yield self.sessions.touch(token, 5000)
        self.assertTrue(touched)
        ttl = yield self.redis.ttl(self.prefix + "session:" + token)
        self.assertGreater(int(ttl), 100)
        self.assertTrue((yield self.sessions.exists(token)))
        self.assertTrue((yield self.sessions.delete(token)))
        self.assertFalse((yield self.sessions.exists(token)))
        self.assertIsNone((yield self.sessions.get(token)))
        self.assertFalse((yield self.sessions.delete(token)))
        self.assertFalse((yield self.sessions.touch(token, 10)))

    @defer.inlineCallbacks
    def test_without_ttl_the_key_does_not_expire(self):
        yield self.sessions.set("forever", {"user": "bob"})
        self.addCleanup(self.sessions.delete, "forever")
        ttl = yield self.redis.ttl(self.prefix + "session:forever")
        self.assertEqual(int(ttl), -1)

    def test_bad_arguments_are_clear_errors(self):
        self.assertRaises(ValueError, self.sessions.set, "", {"user": "a"})
        self.assertRaises(TypeError, self.sessions.set, "t", ["user"])
        self.assertRaises(ValueError, self.sessions.set, "t", {"user": "a"}, ttl=0)
        self.assertRaises(ValueError, self.sessions.get, None)

    def test_default_key_is_the_ruby_gems(self):
        self.assertEqual(Sessions(self.redis).prefix, "symple:session:")


class UnreachableRedisTests(unittest.TestCase):
    """A backend tool never hangs: each command waits a bounded time, then says why."""

    @defer.inlineCallbacks
    def test_nobody_listening_fails_with_the_address_and_reason(self):
        port = free_port()
        sessions = Sessions.from_url(f"redis://127.0.0.1:{port}", timeout=0.5)
        self.addCleanup(sessions.redis.disconnect)
        failure = yield with_timeout(self.assertFailure(sessions.get("tok"), RedisUnavailable),
                                     what="the bounded wait")
        self.assertEqual(str(failure), f"no answer from Redis at 127.0.0.1:{port} within "
                                       f"0.5s: connection refused")
        self.assertIsInstance(failure, ConnectionError)

    @defer.inlineCallbacks
    def test_a_server_that_never_answers_fails_and_the_command_is_not_sent(self):
        port, received = silent_server(self)
        emitter = Emitter.from_url(f"redis://127.0.0.1:{port}", timeout=0.5)
        self.addCleanup(emitter.redis.disconnect)
        failure = yield with_timeout(
            self.assertFailure(emitter.to("lobby").send("hi"), RedisUnavailable),
            what="the bounded wait")
        self.assertIn(f"no answer from Redis at 127.0.0.1:{port} within 0.5s: connected, "
                      f"but no answer", str(failure))
        self.assertNotIn(b"PUBLISH", b"".join(received))
        yield with_timeout(
            self.assertFailure(emitter.create_session("t", {"user": "a"}), RedisUnavailable),
            what="the bounded wait")
        self.assertNotIn(b"SET", b"".join(received))

    @defer.inlineCallbacks
    def test_a_redis_that_stops_answering_once_connected_fails(self):
        port, received = silent_server(self, answer_ping=True)
        sessions = Sessions.from_url(f"redis://127.0.0.1:{port}", timeout=0.5)
        self.addCleanup(sessions.redis.disconnect)
        failure = yield with_timeout(self.assertFailure(sessions.get("tok"), RedisUnavailable),
                                     what="the bounded wait")
        self.assertEqual(str(failure), f"no answer from Redis at 127.0.0.1:{port} within "
                                       f"0.5s: connected, but no reply")
        self.assertIn(b"GET", b"".join(received))

    @defer.inlineCallbacks
    def test_disconnect_ends_the_commands_still_waiting(self):
        sessions = Sessions.from_url(f"redis://127.0.0.1:{free_port()}", timeout=60)
        waiting = sessions.get("tok")
        yield sessions.redis.disconnect()
        self.assertTrue(waiting.called)  # and trial sees no timer left behind
        yield self.assertFailure(waiting, CancelledError)

    def test_the_default_bound_is_five_seconds(self):
        for redis in (Sessions.from_url("redis://127.0.0.1:1").redis,
                      Emitter.from_url("redis://127.0.0.1:1").redis):
            self.addCleanup(redis.disconnect)
            self.assertEqual(redis.timeout, COMMAND_TIMEOUT)
        self.assertEqual(COMMAND_TIMEOUT, 5.0)


class EmitterFrameTests(unittest.TestCase):
    """The frames an Emitter builds, without publishing."""

    def setUp(self):
        self.emitter = Emitter(object())

    def test_builders_fill_from_and_to_without_changing_the_original(self):
        bot = self.emitter.sender("bot|backend")
        team = bot.to("team-a")
        self.assertEqual(team.frame({"type": "message"}),
                         {"type": "message", "from": "bot|backend", "to": "team-a"})
        self.assertIsNone(bot.target)
        self.assertEqual(bot.in_rooms("a", "b").frame({"type": "event"})["to"], ["a", "b"])
        self.assertEqual(team.frame({"type": "message", "to": "x|y"})["to"], "x|y")

    def test_ruby_style_constructor(self):
        emitter = Emitter(object(), from_="42", rooms=["team-a"])
        self.assertEqual(emitter.frame({"type": "message"}),
                         {"type": "message", "from": "42", "to": ["team-a"]})

    def test_invalid_frames_and_targets_raise(self):
        self.assertRaises(ValueError, self.emitter.frame, {"type": "message"})
        self.assertRaises(ValueError, self.emitter.to("a").frame, {"data": 1})
        self.assertRaises(TypeError, self.emitter.frame, "text")
        for target in ("", [], ["ok", ""], "user|", 5, "x" * 300):
            self.assertRaises(ValueError, self.emitter.to, target)


class EmitterPublishTests(RedisTestCase):
    @defer.inlineCallbacks
    def test_published_bytes_are_compact_json(self):
        class Listener(txredisapi.SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                got.callback(message)

        got: Deferred = Deferred()
        channel = self.prefix + "broadcast"
        subscriber = yield ClientCreator(reactor, Listener).connectTCP("127.0.0.1", 6379)
        self.addCleanup(subscriber.transport.loseConnection)
        yield subscriber.subscribe(channel)
        emitter = Emitter(self.redis, channel=channel).sender("bot|x").to("team-a")
        count = yield emitter.send_presence(user="bot", online=True)
        self.assertEqual(count, 1)
        message = yield with_timeout(got, what="published message")
        self.assertEqual(message, '{"type":"presence","data":{"user":"bot","online":true},'
                                  '"from":"bot|x","to":"team-a"}')
        self.assertEqual(orjson.loads(message)["type"], "presence")

    @defer.inlineCallbacks
    def test_emitter_manages_sessions_like_the_ruby_gem(self):
        emitter = Emitter(self.redis, sessions=self.sessions)
        yield emitter.create_session("tok", {"user": "alice"}, ttl=60)
        self.assertEqual((yield self.sessions.get("tok")), {"user": "alice"})
        self.assertTrue((yield emitter.destroy_session("tok")))


class TokenAuthTests(ServerTestCase):
    """A session written with Sessions lets a client in; a deleted one does not."""

    def make_settings(self):
        redis_required(self)
        self.prefix = f"test{secrets.token_hex(4)}:"
        return Settings(authentication=True, redis_url=REDIS, key_prefix=self.prefix)

    @defer.inlineCallbacks
    def test_token_auth_via_sessions(self):
        redis = connect_redis(REDIS)
        self.addCleanup(redis.disconnect)
        sessions = Sessions(redis, self.prefix + "session:")
        yield sessions.set("good", {"user": "alice", "name": "Alice", "rooms": ["staff"]}, ttl=60)
        client = SympleClient(self.url, "someone-else", token="good", reconnect=False)
        self.addCleanup(client.disconnect)
        peer = yield with_timeout(client.connect(), what="welcome")
        self.assertEqual((peer["user"], peer["name"]), ("alice", "Alice"))
        self.assertEqual(sorted(client.rooms), ["alice", "staff"])

        yield sessions.delete("good")
        refused = SympleClient(self.url, "alice", token="good")
        self.addCleanup(refused.disconnect)
        error = yield self.assertFailure(with_timeout(refused.connect()), AuthError)
        self.assertEqual(error.status, 401)

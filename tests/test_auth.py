"""Authentication against the real Redis session store (docs/spec.md §9)."""

from __future__ import annotations

import secrets
from typing import Any, Optional

import orjson
import txredisapi
from twisted.internet import defer

from symple_tx.config import Settings
from tests.routing_support import ErrorCase
from tests.support import presence_of, redis_required

REDIS_URL = "redis://127.0.0.1:6379"


class RedisSessionCase(ErrorCase):
    """A server with authentication on, and a direct Redis connection for the test."""

    settings = Settings(authentication=True, redis_url=REDIS_URL)

    @defer.inlineCallbacks
    def setUp(self):
        redis_required(self)
        yield super().setUp()
        self.redis = yield txredisapi.Connection("127.0.0.1", 6379, reconnect=False,
                                                 convertNumbers=False)
        self.addCleanup(self.redis.disconnect)

    @defer.inlineCallbacks
    def store(self, session: Any, expire: Optional[int] = None, raw: bool = False):
        """Store a session under a fresh token (deleted after the test); fires with the token."""
        token = f"test-{secrets.token_urlsafe(12)}"
        key = f"symple:session:{token}"
        value = session if raw else orjson.dumps(session).decode()
        yield self.redis.set(key, value, expire=expire)
        self.addCleanup(self.redis.delete, key)
        return token

    def ttl(self, token: str) -> defer.Deferred:
        return self.redis.ttl(f"symple:session:{token}")


class RedisSessionTests(RedisSessionCase):
    @defer.inlineCallbacks
    def test_stored_session_wins_over_the_frame(self):
        token = yield self.store({"user": "007", "name": "007", "rooms": ["mi6", "0042"],
                                  "clearance": "007", "data": {"badge": "0042"},
                                  "token": "never-shown"})
        agent = yield self.peer("mallory", name="Mallory", token=token, rooms=["evil"],
                                data={"peerType": "person"})
        peer = agent.welcome["peer"]
        self.assertEqual((peer["user"], peer["name"]), ("007", "007"))
        self.assertEqual(agent.address, f"007|{peer['id']}")
        self.assertEqual(agent.welcome["rooms"], ["007", "mi6", "0042"])
        self.assertEqual((peer["clearance"], peer["badge"], peer["peerType"]),
                         ("007", "0042", "person"))
        self.assertNotIn("token", peer)

    @defer.inlineCallbacks
    def test_frame_rooms_are_ignored(self):
        agent_token = yield self.store({"user": "007", "rooms": ["mi6"]})
        boss_token = yield self.store({"user": "m", "rooms": ["mi6"]})
        spy_token = yield self.store({"user": "spy"})
        agent = yield self.peer("007", token=agent_token, rooms=["evil"])
        spy = yield self.peer("spy", token=spy_token, rooms=["mi6", "evil"])
        self.assertEqual(spy.welcome["rooms"], ["spy"])
        boss = yield self.peer("m", token=boss_token)
        got = yield self.collect(agent, spy, boss)
        self.assertEqual(len(presence_of(got[agent], boss)), 1)
        self.assertEqual(len(presence_of(got[boss], agent)), 1)
        self.assertEqual(got[spy], [])
        # The spy cannot reach mi6 either.
        spy.send_json({"type": "message", "subtype": "t", "to": "mi6"})
        got = yield self.collect(spy, agent, boss)
        self.assertEqual([got[agent], got[boss]], [[], []])

    @defer.inlineCallbacks
    def test_session_without_user_is_refused(self):
        """The client never chooses its user: a stored session must name one."""
        token = yield self.store({"rooms": ["r"], "name": "Named"})
        yield self.refused_at_auth({"type": "auth", "user": "bob", "token": token},
                                   401, "the session names no user")

    @defer.inlineCallbacks
    def test_stored_session_with_an_invalid_user_never_falls_back_to_the_frame(self):
        # The store is the authority: a malformed user there must not let the
        # client pick any name it likes (here: impersonate "admin").
        for user in (7, "", None, ["admin"], "ad|min"):
            token = yield self.store({"user": user, "rooms": ["ops"]})
            yield self.refused_at_auth({"type": "auth", "user": "admin", "token": token},
                                       401, "user")

    @defer.inlineCallbacks
    def test_unknown_or_unreadable_token_is_401(self):
        yield self.refused_at_auth({"type": "auth", "user": "alice", "token": "no-such",
                                    "id": "u"}, 401, "unknown token")
        for raw in ("not json", "[1, 2]", '"a string"', "42"):
            token = yield self.store(raw, raw=True)
            yield self.refused_at_auth({"type": "auth", "user": "alice", "token": token},
                                       401, "unknown token")

    @defer.inlineCallbacks
    def test_odd_tokens_are_only_ever_looked_up_literally(self):
        yield self.store({"user": "someone"})  # a key a glob would match
        for token in ("*", "test-*", "\r\nFLUSHALL\r\n", "t\x00k", "é" * 300, "x" * 10_000):
            yield self.refused_at_auth({"type": "auth", "user": "alice", "token": token},
                                       401, "unknown token")
        self.assertEqual(self.flushLoggedErrors(), [])

    @defer.inlineCallbacks
    def test_missing_token_is_401(self):
        yield self.refused_at_auth({"type": "auth", "user": "alice"}, 401, "missing token")
        yield self.refused_at_auth({"type": "auth", "user": "alice", "token": ""}, 401,
                                   "missing token")

    @defer.inlineCallbacks
    def test_expiry_left_alone_without_a_session_ttl(self):
        token = yield self.store({"user": "alice"})
        yield self.peer("alice", token=token)
        ttl = yield self.ttl(token)
        self.assertEqual(ttl, -1)


class SessionTtlTests(RedisSessionCase):
    settings = Settings(authentication=True, redis_url=REDIS_URL, session_ttl=3600)

    @defer.inlineCallbacks
    def test_auth_extends_the_session_expiry(self):
        token = yield self.store({"user": "alice"}, expire=30)
        before = yield self.ttl(token)
        self.assertLessEqual(before, 30)
        yield self.peer("alice", token=token)
        after = yield self.ttl(token)
        self.assertGreater(after, 3000)
        self.assertLessEqual(after, 3600)

    @defer.inlineCallbacks
    def test_unknown_token_creates_no_key(self):
        token = f"test-{secrets.token_urlsafe(12)}"
        self.addCleanup(self.redis.delete, f"symple:session:{token}")
        yield self.refused_at_auth({"type": "auth", "user": "a", "token": token}, 401)
        exists = yield self.redis.exists(f"symple:session:{token}")
        self.assertFalse(exists)

"""Every error row of docs/spec.md §2 over real WebSockets, with its close code.

The auth timeout (408) is a timer: tests/unit/test_transport_timers.py checks it
on simulated time.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from symple_tx.auth import AuthRequest
from symple_tx.config import Settings
from symple_tx.hooks import AuthRejected
from tests.routing_support import ErrorCase
from tests.support import eventually

#: Short enough for a fast test, long enough for a loaded machine to authenticate in time.
AUTH_TIMEOUT = 1.0


class AnonymousErrorTests(ErrorCase):
    @defer.inlineCallbacks
    def test_first_frame_not_auth_is_401(self):
        for number, first in enumerate([{"type": "message", "data": "hi"},
                                        {"type": "join", "room": "r"},
                                        {"type": "presence", "probe": True},
                                        {"type": "close"}, {"type": "nonsense"}]):
            yield self.refused_at_auth({**first, "id": f"f{number}"}, 401, "Not authenticated")

    @defer.inlineCallbacks
    def test_auth_without_a_user_is_401(self):
        for number, user in enumerate([None, "", 42, ["alice"], {"name": "alice"}, True]):
            first: dict = {"type": "auth", "id": number}
            if user is not None:
                first["user"] = user
            yield self.refused_at_auth(first, 401, "Missing user field")

    @defer.inlineCallbacks
    def test_second_auth_is_400_and_stays_open(self):
        peer = yield self.peer("alice")
        peer.send_json({"type": "auth", "user": "mallory", "id": "again"})
        frames = yield self.assert_stays_open(peer)
        self.assertEqual(len(frames), 1)
        self.assert_error(frames[0], 400, frame_id="again")
        # The session is unchanged: the server still stamps alice's address.
        peer.send_json({"type": "message", "to": "alice|" + peer.session_id, "subtype": "who"})
        echo = yield peer.expect(lambda f: f.get("subtype") == "who", "echo")
        self.assertEqual(echo["from"], peer.address)

    @defer.inlineCallbacks
    def test_errors_echo_the_frame_id(self):
        peer = yield self.peer("alice")
        for frame_id in ("abc", 7, 0, "", {"nested": [1]}, [1, "two"]):
            peer.send_json({"type": "bogus", "id": frame_id})
            frames = yield self.assert_stays_open(peer)
            self.assertEqual(len(frames), 1)
            self.assert_error(frames[0], 400, "Unknown frame type", frame_id)
            self.assertEqual(frames[0]["id"], frame_id)
        # No id, no id in the answer.
        peer.send_json({"type": "bogus"})
        frames = yield self.assert_stays_open(peer)
        self.assertNotIn("id", frames[0])


class CapacityTests(ErrorCase):
    settings = Settings(max_connections=1)

    @defer.inlineCallbacks
    def test_connection_over_the_limit_is_503(self):
        first = yield self.peer("alice")
        second = yield self.connect()
        yield self.assert_closes(second, 503)
        yield self.assert_stays_open(first)


def auth_hook(request: AuthRequest) -> Any:
    """Admits token "good"; "later" after a delay, into room "vip"; refuses the rest."""
    if request.user == "banned":
        raise AuthRejected("User 'banned' is suspended until tomorrow")
    if request.token == "later":
        return deferLater(reactor, 0.01, lambda: {"rooms": ["vip"]})
    return request.token == "good"


async def async_auth_hook(request: AuthRequest) -> Any:
    if request.token != "good":
        raise AuthRejected("Coroutine says no")
    return {"name": "Verified " + request.user}


class AuthHookTests(ErrorCase):
    settings = Settings(authentication=True, auth_hook=auth_hook)

    @defer.inlineCallbacks
    def test_missing_or_empty_token_is_401(self):
        yield self.refused_at_auth({"type": "auth", "user": "alice"}, 401, "missing token")
        yield self.refused_at_auth({"type": "auth", "user": "alice", "token": ""}, 401,
                                   "missing token")

    @defer.inlineCallbacks
    def test_hook_message_is_the_error_message(self):
        frame = yield self.refused_at_auth(
            {"type": "auth", "user": "banned", "token": "good", "id": "b"}, 401)
        self.assertEqual(frame["message"], "User 'banned' is suspended until tomorrow")

    @defer.inlineCallbacks
    def test_hook_returning_false_is_401(self):
        yield self.refused_at_auth({"type": "auth", "user": "alice", "token": "bad"}, 401,
                                   "rejected")

    @defer.inlineCallbacks
    def test_hook_admits_and_its_rooms_win_over_the_frame(self):
        good = yield self.peer("alice", token="good", rooms=["ignored"])
        self.assertEqual(good.welcome["rooms"], ["alice"])
        later = yield self.peer("bob", token="later", rooms=["ignored"])
        self.assertEqual(later.welcome["rooms"], ["bob", "vip"])
        self.assertNotIn("token", later.welcome["peer"])

    @defer.inlineCallbacks
    def test_frames_sent_during_a_slow_auth_wait_for_it(self):
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": "bob", "token": "later"})
        peer.send_json({"type": "message", "subtype": "queued", "to": "bob", "id": "q"})
        peer.send_json({"type": "join", "room": "after-auth", "id": "j"})
        welcome = yield peer.next("welcome")
        self.assertEqual(welcome["type"], "welcome")
        peer.welcome = welcome
        ack = yield peer.expect("join:ok")
        self.assertEqual(ack["id"], "j")
        self.assertEqual([f["type"] for f in peer.received], ["welcome", "join:ok"])


#: Auth decisions the test releases by hand: user -> Deferred.
PENDING: dict = {}


def pending_auth_hook(request: AuthRequest) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    PENDING[request.user] = d
    return d


class PendingAuthTests(ErrorCase):
    """An auth decision that arrives after the connection is gone admits nobody."""

    settings = Settings(authentication=True, auth_hook=pending_auth_hook,
                        auth_timeout=AUTH_TIMEOUT)

    def setUp(self):
        PENDING.clear()
        return super().setUp()

    @defer.inlineCallbacks
    def start_auth(self, user: str):
        """A connection whose ``auth`` is waiting for the hook's decision."""
        peer = yield self.connect()
        peer.send_json({"type": "auth", "user": user, "token": "t"})
        yield eventually(lambda: user in PENDING, what=f"auth hook call for {user}")
        return peer

    @defer.inlineCallbacks
    def watch(self):
        """An admitted peer in room "lobby" that would see any newcomer there."""
        self.watcher = yield self.start_auth("watcher")
        PENDING.pop("watcher").callback({"rooms": ["lobby"]})
        self.watcher.welcome = yield self.watcher.expect("welcome")

    @defer.inlineCallbacks
    def assert_no_ghost(self, user: str):
        """Admitting ``user`` now creates no session and tells nobody."""
        PENDING.pop(user).callback({"rooms": ["lobby"]})
        got = yield self.collect(self.watcher)
        self.assertEqual(got[self.watcher], [])
        self.assertEqual([s.user for s in self.server.router.sessions.values()], ["watcher"])
        self.assertEqual(len(self.server.router.links), 1)

    @defer.inlineCallbacks
    def test_timeout_while_the_hook_thinks(self):
        yield self.watch()
        slow = yield self.start_auth("slow")
        yield self.assert_closes(slow, 408)
        yield eventually(lambda: len(self.server.router.links) == 1, what="server sees close")
        yield self.assert_no_ghost("slow")

    @defer.inlineCallbacks
    def test_disconnect_while_the_hook_thinks(self):
        yield self.watch()
        gone = yield self.start_auth("gone")
        gone.transport.abortConnection()
        yield gone.wait_closed()
        yield eventually(lambda: len(self.server.router.links) == 1, what="server sees close")
        yield self.assert_no_ghost("gone")


class AsyncAuthHookTests(ErrorCase):
    settings = Settings(authentication=True, auth_hook=async_auth_hook)

    @defer.inlineCallbacks
    def test_coroutine_hook(self):
        frame = yield self.refused_at_auth({"type": "auth", "user": "a", "token": "x"}, 401)
        self.assertEqual(frame["message"], "Coroutine says no")
        peer = yield self.peer("alice", token="good")
        self.assertEqual(peer.welcome["peer"]["name"], "Verified alice")

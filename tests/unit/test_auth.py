"""Authentication without sockets: the auth frame, the session store and the auth hook."""

from __future__ import annotations

from typing import Any, Optional

from twisted.internet.defer import Deferred, succeed
from twisted.trial import unittest

from symple_tx.auth import AuthRequest, Authenticator, parse_auth
from symple_tx.config import Settings
from symple_tx.hooks import AuthRejected, load_callable
from symple_tx.session import Identity, Session
from symple_tx.wire import ProtocolError

from tests.fakes import FakeLink, FakeStore

HOST = "203.0.113.9"
#: What symple-client 4.x sends when the application gave no name or token.
JS_CLIENT_AUTH = {"type": "auth", "user": "alice", "name": "", "token": "",
                  "data": {"peerType": "person"}, "id": "x1"}


def auth(**fields: Any) -> dict:
    return {"type": "auth", "user": "alice", **fields}


class AuthTestCase(unittest.TestCase):
    def authenticator(self, store: Optional[FakeStore] = None, **settings: Any) -> Authenticator:
        return Authenticator(Settings(**settings), store)

    def admit(self, authenticator: Authenticator, frame: dict) -> Identity:
        return self.successResultOf(authenticator.authenticate(frame, HOST))

    def refuse(self, authenticator: Authenticator, frame: dict, status: int = 401,
               message: Optional[str] = None) -> ProtocolError:
        """The frame is refused with an error that closes the connection."""
        d = authenticator.authenticate(frame, HOST)
        exc = self.failureResultOf(d, ProtocolError).value
        self.assertEqual(exc.status, status, exc.message)
        self.assertTrue(exc.close, "a refused auth must close the connection")
        if message is not None:
            self.assertEqual(exc.message, message)
        return exc


class AnonymousTests(AuthTestCase):
    def test_rooms_from_the_frame(self):
        identity = self.admit(self.authenticator(), auth(name="Alice", rooms=["a", "b"]))
        self.assertEqual((identity.user, identity.name, identity.rooms),
                         ("alice", "Alice", ["a", "b"]))

    def test_no_rooms(self):
        self.assertEqual(self.admit(self.authenticator(), auth()).rooms, [])

    def test_js_client_empty_strings(self):
        identity = self.admit(self.authenticator(), dict(JS_CLIENT_AUTH))
        self.assertEqual(identity.user, "alice")
        self.assertEqual(identity.extra, {"peerType": "person"})
        session = Session(FakeLink(), identity, HOST)
        self.assertEqual(session.name, "alice")
        self.assertEqual(session.peer()["name"], "alice")

    def test_token_is_not_looked_up(self):
        store = FakeStore({"t": {"user": "mallory", "rooms": ["vip"]}})
        identity = self.admit(self.authenticator(store), auth(token="t", rooms=["a"]))
        self.assertEqual((identity.user, identity.rooms), ("alice", ["a"]))
        self.assertEqual(store.looked_up, [])

    def test_reserved_data_keys_dropped(self):
        data = {"id": "forged", "user": "bob", "name": "Bob", "online": False,
                "type": "admin", "token": "secret", "host": "10.0.0.1",
                "peerType": "person", "profile": {"token": "deep", "age": 3}}
        identity = self.admit(self.authenticator(), auth(data=data))
        self.assertEqual(identity.extra, {"peerType": "person", "profile": {"age": 3}})
        self.assertIsNone(identity.peer_type)
        peer = Session(FakeLink(), identity, HOST).peer()
        self.assertEqual((peer["user"], peer["name"], peer["online"], peer["host"]),
                         ("alice", "alice", True, HOST))
        self.assertNotIn("type", peer)

    def test_invalid_rooms(self):
        for rooms in ("a", ["a", ""], [1], ["x" * 257], {"a": 1}):
            self.refuse(self.authenticator(), auth(rooms=rooms), 400)


class FrameValidationTests(AuthTestCase):
    def test_missing_or_empty_user(self):
        for frame in ({"type": "auth"}, auth(user=None), auth(user=""), auth(user=7),
                      auth(user=["alice"]), auth(user={"id": 1})):
            self.refuse(self.authenticator(), frame, 401, "Missing user field")

    def test_invalid_user(self):
        for user in ("al|ice", "|", "x" * 257):
            exc = self.refuse(self.authenticator(), auth(user=user), 401)
            self.assertIn("Invalid user field", exc.message)

    def test_longest_user(self):
        self.assertEqual(self.admit(self.authenticator(), auth(user="x" * 256)).user, "x" * 256)

    def test_invalid_name_token_data(self):
        for frame, field in ((auth(name=5), "name"), (auth(token=5), "token"),
                             (auth(data="x"), "data"), (auth(data=[1]), "data")):
            exc = self.refuse(self.authenticator(), frame, 401)
            self.assertIn(field, exc.message)

    def test_parse_auth_defaults(self):
        request = parse_auth(dict(JS_CLIENT_AUTH), HOST)
        self.assertEqual((request.user, request.name, request.token, request.rooms,
                          request.host), ("alice", "alice", "", [], HOST))


class SessionStoreTests(AuthTestCase):
    def setUp(self) -> None:
        self.store = FakeStore({
            "good": {"user": "alice", "name": "Alice A.", "rooms": ["team", "ops"],
                     "role": "admin", "token": "leak", "data": {"avatar": "a.png"}},
            "other": {"user": "carol"},
            "bad-rooms": {"user": "dave", "rooms": "team"},
        })

    def test_missing_token(self):
        auth_on = self.authenticator(self.store, authentication=True)
        for frame in (auth(), auth(token=""), dict(JS_CLIENT_AUTH)):
            self.refuse(auth_on, frame, 401, "Authentication failed: missing token")
        self.assertEqual(self.store.looked_up, [])

    def test_unknown_token(self):
        self.refuse(self.authenticator(self.store, authentication=True), auth(token="nope"),
                    401, "Authentication failed: unknown token")
        self.assertEqual(self.store.looked_up, ["nope"])

    def test_stored_session_wins(self):
        frame = auth(user="mallory", name="M", token="good", rooms=["frame-room"],
                     data={"role": "guest", "peerType": "person"})
        identity = self.admit(self.authenticator(self.store, authentication=True), frame)
        self.assertEqual((identity.user, identity.name), ("alice", "Alice A."))
        self.assertEqual(identity.rooms, ["team", "ops"])
        self.assertEqual(identity.extra, {"role": "admin", "avatar": "a.png",
                                          "peerType": "person"})

    def test_frame_rooms_ignored_without_stored_rooms(self):
        identity = self.admit(self.authenticator(self.store, authentication=True),
                              auth(user="x", name="X", token="other", rooms=["frame-room"]))
        self.assertEqual((identity.user, identity.name, identity.rooms), ("carol", "X", []))

    def test_invalid_stored_rooms(self):
        self.refuse(self.authenticator(self.store, authentication=True),
                    auth(token="bad-rooms"), 400)

    def test_ttl_touch(self):
        authenticator = self.authenticator(self.store, authentication=True, session_ttl=600)
        self.admit(authenticator, auth(token="good"))
        self.assertEqual(self.store.touched, [("good", 600)])

    def test_no_touch_without_ttl(self):
        self.admit(self.authenticator(self.store, authentication=True), auth(token="good"))
        self.assertEqual(self.store.touched, [])

    def test_no_touch_for_unknown_token(self):
        authenticator = self.authenticator(self.store, authentication=True, session_ttl=600)
        self.refuse(authenticator, auth(token="nope"))
        self.assertEqual(self.store.touched, [])

    def test_slow_store(self):
        pending: Deferred = Deferred()
        store = FakeStore()
        store.get = lambda token: pending
        d = self.authenticator(store, authentication=True).authenticate(auth(token="t"), HOST)
        self.assertNoResult(d)
        pending.callback({"user": "alice", "rooms": ["r"]})
        self.assertEqual(self.successResultOf(d).rooms, ["r"])

    def test_authentication_needs_a_source(self):
        self.assertRaises(ValueError, Authenticator, Settings(authentication=True), None)


class AuthHookTests(AuthTestCase):
    def hooked(self, hook: Any, store: Optional[FakeStore] = None,
               **settings: Any) -> tuple[Authenticator, list[AuthRequest]]:
        requests: list[AuthRequest] = []

        def recording(request: AuthRequest) -> Any:
            requests.append(request)
            return hook(request)

        return self.authenticator(store, auth_hook=recording, **settings), requests

    def test_allow(self):
        authenticator, requests = self.hooked(lambda request: True)
        identity = self.admit(authenticator, auth(rooms=["a"], data={"k": 1}, token="t"))
        self.assertEqual((identity.user, identity.rooms, identity.extra),
                         ("alice", ["a"], {"k": 1}))
        (request,) = requests
        self.assertEqual((request.user, request.name, request.token, request.rooms,
                          request.data, request.host, request.session),
                         ("alice", "alice", "t", ["a"], {"k": 1}, HOST, None))

    def test_reject_with_false(self):
        for verdict in (False, None, 0):
            authenticator, _ = self.hooked(lambda request, v=verdict: v)
            self.refuse(authenticator, auth(), 401, "Authentication rejected")

    def test_reject_with_message(self):
        def hook(request: AuthRequest) -> bool:
            raise AuthRejected("Your ticket has expired")

        authenticator, _ = self.hooked(hook)
        self.refuse(authenticator, auth(), 401, "Your ticket has expired")

    def test_reject_without_message(self):
        def hook(request: AuthRequest) -> bool:
            raise AuthRejected()

        authenticator, _ = self.hooked(hook)
        self.refuse(authenticator, auth(), 401, "Authentication rejected")

    def test_async_reject(self):
        async def hook(request: AuthRequest) -> bool:
            raise AuthRejected("Not today")

        authenticator, _ = self.hooked(hook)
        self.refuse(authenticator, auth(), 401, "Not today")

    def test_hook_failure_is_not_a_rejection(self):
        # A crashing hook is the server's fault: the transport answers 503.
        def hook(request: AuthRequest) -> bool:
            raise RuntimeError("database down")

        authenticator, _ = self.hooked(hook)
        d = authenticator.authenticate(auth(), HOST)
        self.failureResultOf(d, RuntimeError)

    def test_deferred_and_async(self):
        gate: Deferred = Deferred()

        async def hook(request: AuthRequest) -> Any:
            return await gate

        for make in (lambda request: succeed({"rooms": ["d"]}), hook):
            authenticator, _ = self.hooked(make)
            d = authenticator.authenticate(auth(), HOST)
            if not gate.called:
                gate.callback({"rooms": ["d"]})
            self.assertEqual(self.successResultOf(d).rooms, ["d"])

    def test_dict_overrides(self):
        verdict = {"user": "bob", "name": "Bob", "rooms": ["vip"], "type": "agent",
                   "level": 3, "token": "leak", "data": {"badge": "gold", "id": "forged"}}
        authenticator, _ = self.hooked(lambda request: dict(verdict))
        identity = self.admit(authenticator, auth(rooms=["frame"], data={"level": 1}))
        self.assertEqual((identity.user, identity.name, identity.rooms, identity.peer_type),
                         ("bob", "Bob", ["vip"], "agent"))
        self.assertEqual(identity.extra, {"level": 3, "badge": "gold"})

    def test_hook_sees_and_overrides_the_stored_session(self):
        store = FakeStore({"t": {"user": "alice", "rooms": ["team"], "plan": "free"}})
        authenticator, requests = self.hooked(lambda request: {"rooms": ["team", "extra"]},
                                              store, authentication=True)
        identity = self.admit(authenticator, auth(token="t"))
        self.assertEqual(requests[0].session, {"user": "alice", "rooms": ["team"],
                                               "plan": "free"})
        self.assertEqual(identity.rooms, ["team", "extra"])
        self.assertEqual(identity.extra, {"plan": "free"})

    def test_hook_only_authentication(self):
        authenticator, requests = self.hooked(lambda request: request.token == "ok",
                                              authentication=True)
        self.admit(authenticator, auth(token="ok"))
        self.refuse(authenticator, auth(token="no"), 401, "Authentication rejected")
        self.refuse(authenticator, auth(), 401, "Authentication failed: missing token")
        self.assertEqual(len(requests), 2)

    def test_hook_not_called_after_store_refusal(self):
        store = FakeStore()
        authenticator, requests = self.hooked(lambda request: True, store, authentication=True)
        self.refuse(authenticator, auth(token="nope"))
        self.assertEqual(requests, [])

    def test_invalid_hook_rooms(self):
        authenticator, _ = self.hooked(lambda request: {"rooms": [""]})
        self.refuse(authenticator, auth(), 400)


#: A non-callable attribute for the hook loader to refuse.
NOT_CALLABLE = 42


class HookLoadingTests(unittest.TestCase):
    """``--auth-hook``/``--join-hook`` name a callable as ``package.module:attribute``."""

    def test_function_and_nested_attribute(self):
        self.assertIs(load_callable("symple_tx.auth:parse_auth"), parse_auth)
        self.assertEqual(load_callable("symple_tx.auth:Authenticator._merge"),
                         Authenticator._merge)

    def test_bad_specs(self):
        for spec, fragment in (("symple_tx.auth", "must look like"),
                               (":parse_auth", "must look like"),
                               ("symple_tx.auth:", "must look like"),
                               ("no_such_module_xyz:f", "cannot import"),
                               ("symple_tx.auth:nothing_here", "no attribute"),
                               ("tests.unit.test_auth:NOT_CALLABLE", "not callable")):
            exc = self.assertRaises(ValueError, load_callable, spec)
            self.assertIn(fragment, str(exc))

"""Hostile and malformed input over real WebSockets (docs/spec.md §1, §2 and §4).

Every bad frame gets a readable ``error`` (400 unless documented otherwise),
the connection stays open where the contract says so, the server logs no
unhandled error, and a bystander pair keeps talking without losing a frame.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st
from twisted.internet import defer

from symple_tx.config import Settings
from tests.routing_support import of_kind
from tests.support import ServerTestCase, TestPeer

#: Statuses a peer may provoke with bad input on an open connection.
SURVIVABLE = {400, 403}


def nested(depth: int, kind: str = "[]") -> bytes:
    """A message whose ``data`` nests ``depth`` arrays or objects."""
    if kind == "[]":
        inner = b"[" * depth + b"]" * depth
    else:
        inner = b'{"a":' * depth + b"1" + b"}" * depth
    return b'{"type": "message", "subtype": "deep", "data": ' + inner + b"}"


def examples(strategy: st.SearchStrategy, count: int) -> list:
    """``count`` values drawn by Hypothesis, reproducibly (same values every run)."""
    drawn: list = []

    @hypothesis_settings(max_examples=count, database=None, derandomize=True, deadline=None,
                         suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(value: Any) -> None:
        drawn.append(value)

    draw()
    return drawn


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

FIELDS = ("to", "data", "room", "rooms", "user", "name", "token", "probe", "id", "from")
frames = st.fixed_dictionaries(
    {"type": st.sampled_from(["message", "presence", "command", "event", "auth", "join",
                              "leave", "bogus", "", "__proto__"]) | json_values},
    optional={field: json_values | st.sampled_from(["lobby", "bystand", "mallory", "x"])
              for field in FIELDS})


class BadInputCase(ServerTestCase):
    """mallory (with witness wendy) misbehaves; x and y are bystanders in another room."""

    settings = Settings(rate_limit=1_000_000)

    @defer.inlineCallbacks
    def setUp(self):
        yield super().setUp()
        self.mallory = yield self.peer("mallory", rooms=["lobby"])
        self.wendy = yield self.peer("wendy", rooms=["lobby"])
        self.x = yield self.peer("x", rooms=["bystand"])
        self.y = yield self.peer("y", rooms=["bystand"])
        self.sequence = 0
        yield self.collect(self.mallory, self.wendy, self.x, self.y)
        self.addCleanup(self.check_bystanders)  # runs before the server stops

    def bystanders_talk(self) -> None:
        """x and y each send the next numbered message to the other."""
        n = self.sequence
        self.sequence += 1
        self.x.send_json({"type": "message", "subtype": "seq", "to": self.y.address, "data": n})
        self.y.send_json({"type": "message", "subtype": "seq", "to": "bystand", "data": n})

    @defer.inlineCallbacks
    def check_bystanders(self):
        """Nothing the bystanders sent was lost, reordered or duplicated; nothing was logged."""
        yield self.collect(self.x, self.y)
        for peer in (self.x, self.y):
            numbers = [f["data"] for f in of_kind(peer.received, "message", subtype="seq")]
            self.assertEqual(numbers, list(range(self.sequence)))
        self.assert_no_logged_errors()

    def assert_readable(self, error: dict) -> None:
        self.assertEqual(error["type"], "error")
        self.assertIsInstance(error["status"], int)
        message = error["message"]
        self.assertIsInstance(message, str)
        self.assertTrue(3 < len(message) < 300, message)
        self.assertNotIn("Traceback", message)
        self.assertNotEqual(error["status"], 500, message)

    @defer.inlineCallbacks
    def send_bad(self, payload: bytes, status: Optional[int] = 400, binary: bool = False,
                 peer: Optional[TestPeer] = None):
        """Send ``payload`` raw while the bystanders talk; fires with the reply frames.

        ``status`` (unless None) is the single error expected back; either way the
        connection must still be open and routing afterwards.
        """
        peer = peer or self.mallory
        self.bystanders_talk()
        peer.send_raw(payload, binary=binary)
        replies = yield peer.round_trip()
        for error in of_kind(replies, "error"):
            self.assert_readable(error)
        if status is not None:
            self.assertEqual(len(replies), 1, (payload[:80], replies))
            self.assertEqual(replies[0]["type"], "error", replies)
            self.assertEqual(replies[0]["status"], status, replies)
        self.assertIsNone(peer.close_code, payload[:80])
        return replies

    def send_frame(self, frame: Any, status: Optional[int] = 400) -> defer.Deferred:
        return self.send_bad(orjson.dumps(frame), status)


class MalformedFrameTests(BadInputCase):
    @defer.inlineCallbacks
    def test_invalid_json(self):
        for payload in (b"{not json", b'{"type": "message",}', b'{"type": "message"',
                        b"{'type': 'message'}", b"undefined", b"NaN", b'{"type": "message"}x',
                        b"\x00", b"{" * 10):
            replies = yield self.send_bad(payload)
            self.assertIn("Invalid JSON", replies[0]["message"])

    @defer.inlineCallbacks
    def test_empty_and_blank_frames(self):
        for payload in (b"", b" ", b"\r\n\t"):
            yield self.send_bad(payload)

    @defer.inlineCallbacks
    def test_json_that_is_not_an_object(self):
        for value, name in ((None, "null"), ([], "an array"), ([{"type": "message"}], "an array"),
                            (42, "a number"), (-0.5, "a number"), ("message", "a string"),
                            (True, "a boolean")):
            replies = yield self.send_frame(value)
            self.assertIn(name, replies[0]["message"])

    @defer.inlineCallbacks
    def test_huge_numbers(self):
        for payload in (b"1e400", b"-1e400", b'{"type": "message", "data": 1e400}',
                        b'{"type": "message", "data": [-1e999]}'):
            yield self.send_bad(payload)
        yield self.send_bad(str(2 ** 70).encode())
        # In a frame, a 70-bit integer is a JSON number like any other: it reaches the
        # witness as the nearest double, exactly what a JavaScript client would read.
        yield self.send_bad(b'{"type": "message", "subtype": "big", "data": %d}' % 2 ** 70,
                            status=None)
        got = yield self.collect(self.mallory, self.wendy)
        (big,) = of_kind(got[self.wendy], "message", subtype="big")
        self.assertEqual(big["data"], float(2 ** 70))

    @defer.inlineCallbacks
    def test_deep_nesting(self):
        for depth in (129, 200, 255, 256, 1000, 1023, 5000):
            for kind in ("[]", "{}"):
                replies = yield self.send_bad(nested(depth, kind))
                self.assertRegex(replies[0]["message"], "nested too deeply|depth limit")
        # As deep as a frame may be: routed and re-encoded intact.
        yield self.send_bad(nested(127), status=None)
        got = yield self.collect(self.mallory, self.wendy)
        (deep,) = of_kind(got[self.wendy], "message", subtype="deep")
        self.assertEqual(orjson.dumps(deep["data"]), b"[" * 127 + b"]" * 127)

    @defer.inlineCallbacks
    def test_deep_nesting_cannot_poison_presence(self):
        # Stored presence is re-sent in every snapshot: a deep one would break later auths.
        yield self.send_bad(b'{"type": "presence", "data": {"x": ' + b"[" * 300 + b"]" * 300
                            + b"}}")
        newcomer = yield self.peer("newcomer", rooms=["lobby"])
        got = yield self.collect(newcomer)
        self.assertEqual(len(of_kind(got[newcomer], "presence")), 2)

    @defer.inlineCallbacks
    def test_invalid_utf8_in_a_text_frame(self):
        for payload in (b"\xff\xfe", b'{"type": "message", "data": "\xc3"}',
                        b'{"type": "message", "data": "\xed\xa0\x80"}',
                        b'{"type": "message", "data": "\xf4\x90\x80\x80"}',
                        b'{"type": "message", "data": "\xc0\xaf"}',
                        b'{"type": "mess\x80age"}'):
            replies = yield self.send_bad(payload)
            self.assertIn("UTF-8", replies[0]["message"])

    @defer.inlineCallbacks
    def test_binary_frames(self):
        for payload in (b'{"type": "message", "data": "hi"}', b"\x00\x01\x02", b""):
            replies = yield self.send_bad(payload, binary=True)
            self.assertIn("Binary", replies[0]["message"])

    @defer.inlineCallbacks
    def test_missing_or_wrong_type(self):
        for frame in ({}, {"data": "x"}, {"type": None}, {"type": 42}, {"type": ""},
                      {"type": ["message"]}, {"type": {"message": True}}):
            replies = yield self.send_frame({**frame, "id": "t"})
            self.assertIn("'type'", replies[0]["message"])
            self.assertEqual(replies[0]["id"], "t")
        for kind in ("welcome", "error", "join:ok", "Message", "message ", "__proto__",
                     "constructor", "x" * 10_000):
            replies = yield self.send_frame({"type": kind})
            self.assertIn("Unknown frame type", replies[0]["message"])


class WrongFieldTypeTests(BadInputCase):
    """Each field with a value of the wrong JSON type, on an authenticated connection."""

    @defer.inlineCallbacks
    def test_to(self):
        for to in (5, 1.5, True, None, {}, {"user": "wendy"}, [5], [None], [[]], "",
                   "x" * 257):
            replies = yield self.send_frame({"type": "message", "to": to})
            self.assertIn("'to'", replies[0]["message"])

    @defer.inlineCallbacks
    def test_presence_data(self):
        for data in ("online", 5, True, [1], ["a", {"b": 1}]):
            replies = yield self.send_frame({"type": "presence", "data": data})
            self.assertIn("data", replies[0]["message"])
        # The stored presence is untouched: a newcomer still sees mallory as she was.
        newcomer = yield self.peer("newcomer", rooms=["lobby"])
        got = yield self.collect(newcomer)
        (seen,) = [f for f in got[newcomer] if f.get("from") == self.mallory.address]
        self.assertEqual(seen["data"]["user"], "mallory")

    @defer.inlineCallbacks
    def test_room(self):
        for kind in ("join", "leave"):
            for room in (5, True, None, [], ["lobby"], {"name": "lobby"}, "", "x" * 257):
                replies = yield self.send_frame({"type": kind, "room": room})
                self.assertIn("room", replies[0]["message"])

    @defer.inlineCallbacks
    def test_message_fields_of_any_type_pass_through(self):
        # message/command/event content is the application's business.
        for data in (None, 5, "s", [1, [2]], {"a": None}):
            frame = {"type": "message", "subtype": "any", "data": data, "rooms": 5,
                     "user": ["u"], "room": {}, "name": 1.5, "probe": "yes", "id": [1]}
            yield self.send_frame(frame, status=None)
            got = yield self.collect(self.mallory, self.wendy)
            (copy,) = of_kind(got[self.wendy], "message", subtype="any")
            self.assertEqual(copy, {**frame, "from": self.mallory.address})

    @defer.inlineCallbacks
    def test_prototype_keys_are_plain_data(self):
        frame = {"type": "message", "subtype": "proto", "__proto__": {"polluted": True},
                 "constructor": {"prototype": {"x": 1}}, "hasOwnProperty": "nope",
                 "data": {"__proto__": {"isAdmin": True}, "toString": 1, "valueOf": None}}
        yield self.send_frame(frame, status=None)
        got = yield self.collect(self.mallory, self.wendy)
        (copy,) = of_kind(got[self.wendy], "message", subtype="proto")
        self.assertEqual(copy, {**frame, "from": self.mallory.address})
        for to in ("__proto__", "constructor", "hasOwnProperty", ["__proto__"]):
            yield self.send_frame({"type": "message", "to": to}, status=None)
        for kind in ("join", "leave"):
            replies = yield self.send_frame({"type": kind, "room": "__proto__"}, status=None)
            self.assertEqual([r["type"] for r in replies], [f"{kind}:ok"])


class AuthBadInputTests(BadInputCase):
    """Bad ``auth`` frames: refused (and closed, per docs/spec.md §2) without harming others."""

    @defer.inlineCallbacks
    def refused(self, frame: Any, status: int, message: str):
        peer = yield self.connect()
        self.bystanders_talk()
        peer.send_raw(orjson.dumps(frame))
        error = yield peer.next("error")
        self.assert_readable(error)
        self.assertEqual(error["status"], status, error)
        self.assertIn(message, error["message"])
        code, _ = yield peer.wait_closed()
        self.assertEqual(code, 4000 + status)

    @defer.inlineCallbacks
    def test_wrong_field_types(self):
        auth = {"type": "auth", "user": "u"}
        for user in (5, None, True, [], ["u"], {"u": 1}, ""):
            yield self.refused({**auth, "user": user}, 401, "Missing user field")
        for user in ("a|b", "|", "x" * 257):
            yield self.refused({**auth, "user": user}, 401, "user")
        for field, value in (("name", 5), ("name", ["n"]), ("token", 5), ("token", {}),
                             ("data", "x"), ("data", [1]), ("data", 5)):
            yield self.refused({**auth, field: value}, 401, field)
        for rooms in ("lobby", 5, {"a": 1}, [5], [""], ["x" * 257], [None]):
            yield self.refused({**auth, "rooms": rooms}, 400, "rooms")

    @defer.inlineCallbacks
    def test_garbage_before_auth_stays_open(self):
        peer = yield self.connect()
        for payload in (b"{nope", b"null", b"[]", b"", b"\xff", b"1e400", nested(300)):
            peer.send_raw(payload)
            error = yield peer.next("error")
            self.assert_readable(error)
            self.assertEqual(error["status"], 400)
        peer.send_raw(b'{"type": "auth"}', binary=True)
        error = yield peer.next("error")
        self.assertEqual(error["status"], 400)
        yield peer.auth("late", rooms=["bystand"])
        self.assertIsNone(peer.close_code)


class FuzzTests(BadInputCase):
    """Hypothesis-drawn frames and bytes; the same values every run."""

    @defer.inlineCallbacks
    def test_random_frames(self):
        for frame in examples(frames, 150):
            if frame.get("type") == "close":
                continue
            replies = yield self.send_bad(orjson.dumps(frame), status=None)
            for reply in of_kind(replies, "error"):
                self.assertIn(reply["status"], SURVIVABLE, (frame, reply))
        # Whatever mallory did (she may have left the lobby), she is still a working peer.
        self.mallory.send_json({"type": "join", "room": "lobby"})
        self.mallory.send_json({"type": "message", "to": self.wendy.address, "subtype": "ok"})
        got = yield self.collect(self.mallory, self.wendy)
        self.assertEqual(len(of_kind(got[self.wendy], "message", subtype="ok")), 1)

    @defer.inlineCallbacks
    def test_random_auth_frames(self):
        auths = st.fixed_dictionaries(
            {"type": st.just("auth")},
            optional={field: json_values | st.sampled_from(["", "lobby", "bystand", "a|b"])
                      for field in ("user", "name", "token", "rooms", "data", "id")})
        for number, frame in enumerate(examples(auths, 60)):
            peer = yield self.connect()
            self.bystanders_talk()
            peer.send_raw(orjson.dumps(frame))
            reply = yield peer.next("auth answer")
            if reply["type"] == "welcome":
                self.assertEqual(reply["peer"]["user"], frame["user"])
                peer.welcome = reply
                yield peer.round_trip()
                peer.transport.loseConnection()
            else:
                self.assert_readable(reply)
                self.assertIn(reply["status"], (400, 401), (frame, reply))
                code, _ = yield peer.wait_closed()
                self.assertEqual(code, 4000 + reply["status"])

    @defer.inlineCallbacks
    def test_random_json_values(self):
        for value in examples(json_values, 100):
            expected = None if isinstance(value, dict) else 400
            yield self.send_bad(orjson.dumps(value), status=expected)

    @defer.inlineCallbacks
    def test_random_bytes(self):
        for payload in examples(st.binary(max_size=48), 100):
            yield self.send_bad(payload)
            yield self.send_bad(payload, binary=True)

"""The wire layer: decoding, token stripping, session ids and frame builders."""

from __future__ import annotations

import re
from typing import Any

import orjson
from twisted.trial import unittest

from symple_tx import wire
from symple_tx.wire import ProtocolError

URL_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def nested(depth: int, leaf: Any, wrap) -> Any:
    """``depth`` levels of ``wrap`` around ``leaf``, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = wrap(value)
    return value


def has_token(value: Any) -> bool:
    """Whether any object at any depth still holds a ``token`` key."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "token" in item:
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class DecodeTests(unittest.TestCase):
    def assertRefused(self, payload: bytes, *fragments: str) -> ProtocolError:
        """``payload`` is refused with a readable 400 mentioning ``fragments``."""
        exc = self.assertRaises(ProtocolError, wire.decode, payload)
        self.assertEqual(exc.status, 400)
        self.assertFalse(exc.close, "a bad frame must not close the connection")
        self.assertIsInstance(exc.message, str)
        self.assertGreater(len(exc.message), 10)
        for fragment in fragments:
            self.assertIn(fragment, exc.message)
        return exc

    def test_valid_object(self):
        frame = wire.decode(b'{"type": "message", "data": {"x": 1}}')
        self.assertEqual(frame, {"type": "message", "data": {"x": 1}})

    def test_invalid_json(self):
        self.assertRefused(b'{"type": "message"', "Invalid JSON")
        self.assertRefused(b"", "Invalid JSON")
        self.assertRefused(b"{'type': 'message'}", "Invalid JSON")

    def test_non_objects(self):
        for payload, kind in [(b"null", "null"), (b"[]", "array"),
                              (b'[{"type": "message"}]', "array"), (b"42", "number"),
                              (b"1.5", "number"), (b'"message"', "string"),
                              (b"true", "boolean")]:
            self.assertRefused(payload, "JSON object", kind)

    def test_missing_empty_or_non_string_type(self):
        for payload in [b"{}", b'{"type": ""}', b'{"type": 7}', b'{"type": null}',
                        b'{"type": ["message"]}', b'{"type": {"a": 1}}']:
            self.assertRefused(payload, "'type'")

    def test_type_error_echoes_frame_id(self):
        exc = self.assertRefused(b'{"id": "f1", "type": 3}')
        self.assertEqual(exc.frame_id, "f1")

    def test_invalid_utf8(self):
        # orjson on its own blames "surrogates" for any bad byte.
        for payload in (b'{"type": "message", "data": "\xff\xfe"}', b'\xc3{"type": "m"}'):
            exc = self.assertRefused(payload, "not valid UTF-8 text")
            self.assertNotIn("surrogate", exc.message)

    def test_encoded_surrogate_bytes(self):
        # U+D800 encoded as UTF-8 bytes is not valid UTF-8.
        self.assertRefused(b'{"type": "message", "data": "\xed\xa0\x80"}', "UTF-8")

    def test_lone_surrogate_escape(self):
        self.assertRefused(b'{"type": "message", "data": "\\ud800"}', "Invalid JSON")
        self.assertRefused(b'{"type": "message", "data": "\\udc00x"}', "Invalid JSON")

    def test_deep_nesting(self):
        arrays = b'{"type": "message", "data": ' + b"[" * 2000 + b"]" * 2000 + b"}"
        self.assertRefused(arrays, "Invalid JSON")
        objects = b'{"a":' * 2000 + b"1" + b"}" * 2000
        self.assertRefused(objects, "Invalid JSON")


    def test_nesting_the_server_can_reencode(self):
        def frame(depth: int) -> bytes:
            # The frame object itself is the first level.
            return b'{"type": "message", "data": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"

        decoded = wire.decode(frame(wire.MAX_DEPTH))
        self.assertEqual(orjson.loads(orjson.dumps(decoded)), decoded)
        self.assertRefused(frame(wire.MAX_DEPTH + 1), "nested too deeply")
        self.assertRefused(frame(300), "nested too deeply")

    def test_the_shortest_frames_over_the_depth_limit(self):
        # A length check clears short payloads without counting brackets:
        # the tightest nesting of MAX_DEPTH + 1 levels must still be refused.
        depth = wire.MAX_DEPTH + 1
        tightest = b"[" * depth + b"]" * depth
        self.assertTrue(wire.too_deep(tightest, orjson.loads(tightest)))
        self.assertFalse(wire.too_deep(tightest[1:-1], orjson.loads(tightest[1:-1])))
        objects = b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)
        self.assertRefused(objects, "nested too deeply")


class StripTokensTests(unittest.TestCase):
    def test_top_level_and_nested(self):
        value = {"token": "a", "data": {"token": "b", "keep": 1,
                                        "list": [{"token": "c"}, [{"token": "d", "x": 2}]]}}
        wire.strip_tokens(value)
        self.assertEqual(value, {"data": {"keep": 1, "list": [{}, [{"x": 2}]]}})

    def test_inside_top_level_list(self):
        value = [{"token": 1}, {"a": [{"token": 2}]}]
        wire.strip_tokens(value)
        self.assertEqual(value, [{}, {"a": [{}]}])

    def test_only_the_key_token(self):
        value = {"tokens": 1, "Token": 2, "data": "token"}
        wire.strip_tokens(value)
        self.assertEqual(value, {"tokens": 1, "Token": 2, "data": "token"})

    def test_scalars_are_left_alone(self):
        for value in (None, 1, "token", True):
            wire.strip_tokens(value)

    def test_five_thousand_deep_objects(self):
        value = nested(5000, {"token": "leaf"}, lambda v: {"token": "t", "next": v})
        wire.strip_tokens(value)
        self.assertFalse(has_token(value))

    def test_five_thousand_deep_mixed(self):
        value = nested(5000, {"token": "leaf"}, lambda v: [{"token": "t", "next": [v]}])
        wire.strip_tokens(value)
        self.assertFalse(has_token(value))


class SessionIdTests(unittest.TestCase):
    def test_shape(self):
        for _ in range(200):
            session_id = wire.new_session_id()
            self.assertRegex(session_id, URL_SAFE)
            self.assertNotIn("|", session_id)
            # Each URL-safe base64 character carries 6 bits.
            self.assertGreaterEqual(len(session_id) * 6, 96)

    def test_unique(self):
        ids = {wire.new_session_id() for _ in range(10_000)}
        self.assertEqual(len(ids), 10_000)

    def test_address(self):
        self.assertEqual(wire.address("alice", "abc"), "alice|abc")


class RoomTests(unittest.TestCase):
    def test_valid_room(self):
        self.assertTrue(wire.valid_room("r"))
        self.assertTrue(wire.valid_room("x" * wire.MAX_ROOM_NAME))
        for bad in ("", "x" * (wire.MAX_ROOM_NAME + 1), None, 1, ["r"], {"r": 1}):
            self.assertFalse(wire.valid_room(bad), bad)

    def test_check_room_echoes_id(self):
        self.assertEqual(wire.check_room({"room": "r"}), "r")
        exc = self.assertRaises(ProtocolError, wire.check_room, {"id": 9, "room": ""})
        self.assertEqual((exc.status, exc.frame_id), (400, 9))

    def test_check_rooms(self):
        self.assertEqual(wire.check_rooms(None), [])
        self.assertEqual(wire.check_rooms(["a", "b"]), ["a", "b"])
        for bad in ("a", ["a", ""], ["a", 1], {"a": 1}):
            exc = self.assertRaises(ProtocolError, wire.check_rooms, bad)
            self.assertEqual(exc.status, 400)


class FrameBuilderTests(unittest.TestCase):
    def test_error_frame(self):
        self.assertEqual(orjson.loads(wire.error(401, "Not authenticated")),
                         {"type": "error", "status": 401, "message": "Not authenticated"})

    def test_error_echoes_id(self):
        for frame_id in ("abc", 0, 17):
            frame = orjson.loads(wire.error(400, "Bad", frame_id))
            self.assertEqual(frame["id"], frame_id)

    def test_close_code(self):
        for status in (400, 401, 408, 413, 429, 503):
            self.assertEqual(ProtocolError(status, "x").close_code, 4000 + status)

    def test_welcome(self):
        frame = orjson.loads(wire.welcome({"id": "i", "user": "u"}, ["u", "r"]))
        self.assertEqual(frame, {"type": "welcome", "protocol": "symple/4", "status": 200,
                                 "peer": {"id": "i", "user": "u"}, "rooms": ["u", "r"]})

    def test_presence(self):
        frame = orjson.loads(wire.presence("u|i", {"id": "i", "online": True}))
        self.assertEqual(frame, {"type": "presence", "from": "u|i",
                                 "data": {"id": "i", "online": True}, "probe": False})

    def test_room_ack(self):
        self.assertEqual(orjson.loads(wire.room_ack("join:ok", "r")),
                         {"type": "join:ok", "room": "r"})
        self.assertEqual(orjson.loads(wire.room_ack("leave:ok", "r", "f")),
                         {"type": "leave:ok", "room": "r", "id": "f"})

    def test_shutdown_event(self):
        self.assertEqual(orjson.loads(wire.SHUTDOWN_EVENT),
                         {"type": "event", "name": "shutdown", "subtype": "shutdown",
                          "message": "Server shutting down"})

"""The HTTP rules of the WebSocket port without sockets (symple_tx.frontdoor)."""

from __future__ import annotations

from twisted.trial import unittest

from symple_tx.frontdoor import path_problem, refusal
from symple_tx.web import head_fields


class PathTests(unittest.TestCase):
    def test_good_paths(self):
        for path in (b"/", b"/index.html", b"/js/app.js", b"/%41", b"/caf%C3%A9", b"/a%2Fb"):
            self.assertIsNone(path_problem(path), path)

    def test_bad_paths(self):
        cases = {b"/index.html%00.js": "control", b"/%zz": "percent", b"/%": "percent",
                 b"/a%2": "percent", b"/%ff": "UTF-8", b"/\xff": "UTF-8", b"/%0a": "control",
                 b"/%7f": "control"}
        for path, reason in cases.items():
            self.assertIn(reason, path_problem(path), path)


class RefusalTests(unittest.TestCase):
    def test_a_complete_response_that_closes(self):
        response = refusal(405, "Only GET", (("Allow", "GET, HEAD"),))
        head, body = response.split(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 405 Method Not Allowed")
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Allow: GET, HEAD", lines)
        self.assertIn(f"Content-Length: {len(body)}".encode(), lines)
        self.assertEqual(body, b"Only GET\n")


class HeadFieldsTests(unittest.TestCase):
    def test_names_are_case_blind_and_repeats_are_joined_in_order(self):
        fields = head_fields(b"GET / HTTP/1.1\r\nUpgrade: WebSocket\r\n"
                             b"X-Forwarded-For: 1.2.3.4\r\nx-forwarded-for: 5.6.7.8")
        self.assertEqual(fields["upgrade"], "WebSocket")
        self.assertEqual(fields["x-forwarded-for"], "1.2.3.4, 5.6.7.8")

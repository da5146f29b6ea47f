"""Sentinel URLs and master discovery, with the Sentinels' answers scripted."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from symple_tx.redis import RedisAddress
from symple_tx.redis.sentinel import MasterNotFound, MasterResolver, SentinelAddress


class ParseTests(unittest.TestCase):
    def test_sentinels_service_database_and_passwords(self):
        address = RedisAddress.parse(
            "redis+sentinel://app:s%40cret@10.0.0.1:26380,10.0.0.2,[::1]:26381/mymaster/2"
            "?sentinel_password=watch&sentinel_username=mon")
        self.assertEqual(address, SentinelAddress(
            sentinels=(("10.0.0.1", 26380), ("10.0.0.2", 26379), ("::1", 26381)),
            service="mymaster", db=2, password="s@cret", username="app",
            sentinel_password="watch", sentinel_username="mon"))

    def test_defaults_and_password_only(self):
        address = RedisAddress.parse("redis+sentinel://:pw@h1/svc")
        self.assertEqual((address.sentinels, address.db, address.password, address.username),
                         ((("h1", 26379),), 0, "pw", None))
        self.assertEqual(RedisAddress.parse("redis+sentinel://h1/svc?db=4").db, 4)

    def test_logs_name_it_without_a_password(self):
        address = RedisAddress.parse("redis+sentinel://:pw@h1,[::1]:7/svc/1")
        self.assertEqual(str(address), "Sentinel service 'svc' via h1:26379,[::1]:7")

    def test_the_master_is_a_plain_address_with_the_urls_login(self):
        address = RedisAddress.parse("redis+sentinel://app:pw@h1/svc/3")
        self.assertEqual(address.server("10.0.0.9", 6380),
                         RedisAddress(host="10.0.0.9", port=6380, db=3, password="pw",
                                      username="app"))

    def test_unusable_urls_say_why(self):
        cases = {
            "redis+sentinel://h1": "names no service",
            "redis+sentinel:///svc": "names no Sentinel",
            "redis+sentinel://h1:0/svc": "invalid port",
            "redis+sentinel://h1:x/svc": "invalid port",
            "redis+sentinel://h1/svc/zero": "expected /service or /service/db",
            "redis+sentinel://h1/svc/1/2": "expected /service or /service/db",
            "redis+sentinel://h1/svc?db=x": "the database must be a number",
            "redis+sentinel://h1/svc?master_password=x": "unknown option 'master_password'",
            "redis+sentinel://:pw@h1:x/svc": "redis+sentinel://:***@h1:x/svc",
        }
        for url, message in cases.items():
            with self.assertRaises(ValueError, msg=url) as caught:
                RedisAddress.parse(url)
            self.assertIn(message, str(caught.exception), url)

    def test_plain_urls_still_parse(self):
        self.assertEqual(RedisAddress.parse("redis://h:1/2"), RedisAddress(host="h", port=1, db=2))
        with self.assertRaises(ValueError) as caught:
            RedisAddress.parse("http://h")
        self.assertIn("redis+sentinel://", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            RedisAddress.parse("redis+sentinel://h1/svc", ca_file="ca.pem")
        self.assertIn("a CA file needs rediss://", str(caught.exception))


class ScriptedResolver(MasterResolver):
    """Replies come from ``answers[(host, port)]``: a value, an exception, or a list of them."""

    def __init__(self, answers: dict, sentinels=(("s1", 1), ("s2", 2), ("s3", 3))) -> None:
        super().__init__(Clock(), SentinelAddress(sentinels=tuple(sentinels), service="svc",
                                                  password="pw", sentinel_password="spw"))
        self.answers = answers
        self.asked: list[tuple[tuple[str, int], tuple[str, ...], Any]] = []

    def _ask(self, server, *command):
        where = (server.host, server.port)
        self.asked.append((where, command, server.password))
        answer = self.answers.get(where, ConnectionRefusedError("refused"))
        if isinstance(answer, BaseException):
            return fail(answer)
        return succeed(answer)


def master_of(resolver: MasterResolver):
    results: list = []
    resolver.resolve().addBoth(results.append)
    return results[0]


class ResolverTests(unittest.TestCase):
    def test_asks_the_sentinels_in_turn_and_checks_the_role(self):
        resolver = ScriptedResolver({("s2", 2): ["10.0.0.9", "6380"],
                                     ("10.0.0.9", 6380): ["master", 0, []]})
        self.assertEqual(master_of(resolver), ("10.0.0.9", 6380))
        self.assertEqual([(w, c[0], p) for w, c, p in resolver.asked],
                         [(("s1", 1), "SENTINEL", "spw"), (("s2", 2), "SENTINEL", "spw"),
                          (("10.0.0.9", 6380), "ROLE", "pw")])
        # the Sentinel that answered is asked first next time
        resolver.asked.clear()
        master_of(resolver)
        self.assertEqual(resolver.asked[0][0], ("s2", 2))

    def test_a_sentinel_naming_a_replica_is_passed_over(self):
        """A Sentinel cut off from the others may still name the demoted master."""
        resolver = ScriptedResolver({("s1", 1): ["old", "1"], ("old", 1): ["slave", "new", 2],
                                     ("s2", 2): ["new", "2"], ("new", 2): [b"master", 5, []]})
        self.assertEqual(master_of(resolver), ("new", 2))

    def test_no_master_fails_with_what_each_sentinel_said(self):
        resolver = ScriptedResolver({("s1", 1): None, ("s2", 2): ["gone", "9"]})
        failure = master_of(resolver)
        failure.trap(MasterNotFound)
        message = str(failure.value)
        self.assertIn("Sentinel s1:1 does not know 'svc'", message)
        self.assertIn("Sentinel s2:2 names gone:9, which does not answer (refused)", message)
        self.assertIn("Sentinel s3:3: refused", message)
        self.assertIsNone(resolver.master)

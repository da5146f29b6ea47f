"""The Redis layer's pure parts: URLs, key names, readable failures, TLS endpoints."""

from __future__ import annotations

from twisted.internet.endpoints import (HostnameEndpoint, TCP4ClientEndpoint,
                                        UNIXClientEndpoint)
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial import unittest

from symple_tx.redis import SCHEMES, Keys, RedisAddress
from symple_tx.redis.connect import endpoint, reason


class AddressTests(unittest.TestCase):
    def test_urls(self):
        self.assertEqual(RedisAddress.parse("redis://:s3cret@10.0.0.5:6380/2"),
                         RedisAddress(host="10.0.0.5", port=6380, db=2, password="s3cret"))
        self.assertEqual(RedisAddress.parse("rediss://user:pw@redis.example"),
                         RedisAddress(host="redis.example", username="user", password="pw",
                                      tls=True))
        self.assertEqual(RedisAddress.parse("unix:/run/redis.sock?db=3"),
                         RedisAddress(unix_path="/run/redis.sock", db=3))
        self.assertEqual(RedisAddress.parse("rediss://h/0?ssl_ca_certs=/ca.pem").ca_file,
                         "/ca.pem")

    def test_ca_file_option_wins_over_the_url(self):
        address = RedisAddress.parse("rediss://h?ssl_ca_certs=/url.pem", "/option.pem")
        self.assertEqual(address.ca_file, "/option.pem")

    def test_unusable_urls_say_why_without_the_password(self):
        for url, message in (("http://h", "must start with redis://, rediss://, unix:"),
                             ("redis://h:port", "invalid port"),
                             ("redis://h/zero", "the database must be a number"),
                             ("redis://h?db=x", "the database must be a number"),
                             ("redis://:hush@h?timeout=1", "unknown option 'timeout'"),
                             ("redis://h?ssl_ca_certs=/ca.pem", "needs rediss://"),
                             ("unix:", "no socket path"),
                             ("", "empty")):
            with self.assertRaises(ValueError) as caught:
                RedisAddress.parse(url)
            self.assertIn(message, str(caught.exception), url)
            self.assertNotIn("hush", str(caught.exception))

    def test_logs_name_it_without_a_password(self):
        self.assertEqual(str(RedisAddress.parse("redis://:hush@10.0.0.5:6380")),
                         "10.0.0.5:6380")
        self.assertEqual(str(RedisAddress.parse("rediss://[::1]:6380")), "[::1]:6380 (TLS)")
        self.assertEqual(str(RedisAddress.parse("unix:/run/r.sock")), "unix:/run/r.sock")

    def test_a_new_scheme_is_one_registry_entry(self):
        SCHEMES["redis+test"] = lambda url, parts: RedisAddress(host="registered", port=1)
        self.addCleanup(SCHEMES.pop, "redis+test")
        self.assertEqual(RedisAddress.parse("redis+test://anything").host, "registered")


class KeysTests(unittest.TestCase):
    def test_names(self):
        keys = Keys()
        self.assertEqual((keys.session("t"), keys.broadcast, keys.control, keys.node("n"),
                          keys.alive("n")),
                         ("symple:session:t", "symple:broadcast", "symple:cluster:v2:control",
                          "symple:cluster:v2:node:n", "symple:cluster:alive:n"))
        self.assertEqual((keys.room("r"), keys.user("r")),
                         ("symple:cluster:v2:room:r", "symple:cluster:v2:user:r"))
        app = Keys("app:", cluster_prefix="blue:")
        self.assertEqual((app.session_prefix, app.broadcast, app.control),
                         ("app:session:", "app:broadcast", "blue:v2:control"))


class EndpointTests(unittest.TestCase):
    def test_plain_tls_and_unix(self):
        reactor = MemoryReactorClock()
        self.assertIsInstance(endpoint(RedisAddress(), reactor), TCP4ClientEndpoint)
        self.assertIsInstance(endpoint(RedisAddress(host="redis.example"), reactor),
                              HostnameEndpoint)
        self.assertIsInstance(endpoint(RedisAddress(unix_path="/r.sock"), reactor),
                              UNIXClientEndpoint)
        tls = endpoint(RedisAddress(host="redis.example", tls=True), reactor)
        self.assertEqual(type(tls).__name__, "_WrapperEndpoint")

    def test_an_unreadable_ca_file_is_one_clear_line(self):
        address = RedisAddress(tls=True, ca_file=self.mktemp())
        with self.assertRaises(ValueError) as caught:
            endpoint(address, MemoryReactorClock())
        self.assertIn("cannot use the Redis CA file", str(caught.exception))


class ReasonTests(unittest.TestCase):
    def test_failures_in_words(self):
        self.assertEqual(reason(Failure(ConnectionRefusedError())), "connection refused")
        self.assertEqual(reason(Failure(DNSLookupError("h"))), "unknown host")
        self.assertEqual(reason(Failure(ConnectionDone())), "the server closed the connection")


class PoolTests(unittest.TestCase):
    def test_reachable_until_an_attempt_fails_with_none_connected(self):
        from symple_tx.redis.connect import Pool
        reactor = MemoryReactorClock()
        pool = Pool(RedisAddress(), reactor, poolsize=2)
        self.assertTrue(pool.reachable)  # not tried yet: commands wait for it
        pool.start()
        self.assertTrue(pool.reachable)  # still connecting the first time
        first, second = reactor.tcpClients
        first[2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(pool.connections[0].attempts, 1)
        self.assertFalse(pool.reachable)
        second[2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertFalse(pool.reachable)
        self.successResultOf(pool.stop())

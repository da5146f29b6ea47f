"""``rediss://`` verifies the server on every path: server bus, session store, broadcast,
``Emitter``/``Sessions`` and the command line refuse a wrong CA or name; the right one works.

A real ``redis-server`` listens with TLS only, on a certificate made by the test.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
import tempfile
from typing import Optional

from twisted.internet import defer
from twisted.trial import unittest

from symple_tx.config import Settings
from symple_tx.emitter import Emitter, RedisUnavailable, Sessions
from symple_tx.redis import RedisAddress
from symple_tx.redis.connect import Connection, connect_once
from symple_tx.redis.store import StoreUnavailable
from symple_tx.service import SympleServer
from tests.cluster_support import _listening, require_redis_server
from tests.process_support import CliMixin
from tests.support import eventually, free_port, with_timeout


def _write_pem(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


class Authority:
    """A certificate authority of the test's own, issuing server certificates."""

    def __init__(self, directory: str, name: str) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder()
                     .subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))
        self.path = _write_pem(os.path.join(directory, f"{name}-ca.pem"),
                               self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, dns: list[str], ips: list[str]) -> tuple[str, str]:
        """A server key and certificate for these names; their PEM paths."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i))
                                                   for i in ips]
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName(names), False)
                .sign(self.key, hashes.SHA256()))
        key_path = _write_pem(os.path.join(self.directory, f"{name}-key.pem"),
                              key.private_bytes(serialization.Encoding.PEM,
                                                serialization.PrivateFormat.TraditionalOpenSSL,
                                                serialization.NoEncryption()))
        cert_path = _write_pem(os.path.join(self.directory, f"{name}-cert.pem"),
                               cert.public_bytes(serialization.Encoding.PEM))
        return key_path, cert_path


class TLSRedis:
    """A redis-server that speaks TLS only, on a free port."""

    def __init__(self, directory: str, key: str, cert: str, ca: str) -> None:
        self.port = free_port()
        self.args = ["redis-server", "--port", "0", "--tls-port", str(self.port),
                     "--bind", "127.0.0.1", "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-ca-cert-file", ca, "--tls-auth-clients", "no", "--save", "",
                     "--appendonly", "no", "--dir", directory]
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.port}"

    def start(self) -> defer.Deferred:
        self.process = subprocess.Popen(self.args, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
        return eventually(self._listening, what="redis-server to listen with TLS")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            output = self.process.stdout.read().decode(errors="replace")
            raise AssertionError(f"redis-server exited: {output[-500:]}")
        return _listening(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()


class TLSTestCase(unittest.TestCase):
    """One CA, a server certificate for 127.0.0.1 and one for another name; a stranger CA."""

    @defer.inlineCallbacks
    def setUp(self):
        require_redis_server(self)
        self.directory = tempfile.mkdtemp(prefix="symple-redis-tls-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.ca = Authority(self.directory, "trusted")
        self.stranger = Authority(self.directory, "stranger")
        key, cert = self.ca.issue("redis", ["localhost"], ["127.0.0.1"])
        self.redis = TLSRedis(self.directory, key, cert, self.ca.path)
        self.addCleanup(self.redis.stop)
        key, cert = self.ca.issue("elsewhere", ["redis.example"], [])
        self.misnamed = TLSRedis(self.directory, key, cert, self.ca.path)
        self.addCleanup(self.misnamed.stop)
        yield self.redis.start()
        yield self.misnamed.start()

    def wrong(self) -> list[tuple[str, str, str]]:
        """(what, URL, CA file) of each refusal: a stranger CA, a certificate for another name."""
        return [("stranger CA", self.redis.url, self.stranger.path),
                ("other name", self.misnamed.url, self.ca.path)]


class ConnectionTests(TLSTestCase):
    @defer.inlineCallbacks
    def test_one_connection_refuses_then_accepts(self):
        reasons = []

        class Watch:
            def ready(self, connection, protocol):
                reasons.append("ready")

            def lost(self, connection, protocol):
                reasons.append("lost")

            def failed(self, connection, why):
                reasons.append(why)

        for what, url, ca in self.wrong():
            del reasons[:]
            connection = Connection(RedisAddress.parse(url, ca), listeners=[Watch()])
            connection.start()
            self.addCleanup(connection.stop)
            yield eventually(lambda: connection.attempts >= 2, what=f"two attempts ({what})")
            self.assertIsNone(connection.protocol, what)
            self.assertNotIn("ready", reasons, what)
            self.assertTrue(all(r.startswith("TLS") for r in reasons), (what, reasons))
            yield connection.stop()
        connection = Connection(RedisAddress.parse(self.redis.url, self.ca.path))
        connection.start()
        self.addCleanup(connection.stop)
        yield eventually(lambda: connection.protocol is not None, what="verified connection")
        self.assertEqual((yield connection.protocol.ping()), b"PONG")

    @defer.inlineCallbacks
    def test_ca_file_in_the_url(self):
        address = RedisAddress.parse(f"{self.redis.url}/0?ssl_ca_certs={self.ca.path}")
        redis = yield with_timeout(connect_once(address), what="connection")
        self.addCleanup(redis.disconnect)
        self.assertEqual((yield redis.ping()), "PONG")

    @defer.inlineCallbacks
    def test_system_trust_store_refuses_a_private_ca(self):
        with self.assertRaises(ConnectionError) as caught:
            yield with_timeout(connect_once(RedisAddress.parse(self.redis.url)),
                               what="refusal")
        self.assertIn("TLS", str(caught.exception))


class ServerTests(TLSTestCase):
    """The server's bus, broadcast subscription and session store, through one address."""

    def serve(self, url: str, ca: str) -> SympleServer:
        server = SympleServer(Settings(redis_url=url, redis_ca=ca, demo=False))
        server.start()
        self.addCleanup(server.shutdown)
        return server

    @defer.inlineCallbacks
    def test_wrong_certificate_is_refused_on_every_server_connection(self):
        for what, url, ca in self.wrong():
            server = self.serve(url, ca)
            bus = server.router.bus
            connections = [bus.publisher, bus.subscriber, *server.pool.connections]
            yield eventually(lambda: all(c.attempts >= 2 for c in connections),
                             what=f"every connection to fail twice ({what})")
            self.assertEqual([c.protocol for c in connections], [None] * len(connections))
            self.assertFalse(bus.up)
            self.assertEqual(bus.subscriber.subscriptions, 0)
            self.assertEqual(server.health.status()[1]["problems"], ["redis unreachable"])
            # Never answered by a stranger: refused at once, the store is unreachable.
            yield self.assertFailure(server.authenticator.store.get("some-token"),
                                     StoreUnavailable)
            yield server.shutdown()

    @defer.inlineCallbacks
    def test_right_certificate_serves_bus_broadcast_and_store(self):
        server = self.serve(self.redis.url, self.ca.path)
        bus = server.router.bus
        yield eventually(lambda: bus.up and server.pool.connected, what="everything up")
        self.assertEqual(server.health.status()[1]["problems"], [])
        self.assertEqual(bus.subscriber.subscriptions, 1)
        self.assertIn(b"symple:broadcast", bus.subscriber.handlers)
        yield server.redis.set("symple:session:tls-token", '{"user": "alice"}')
        stored = yield server.authenticator.store.get("tls-token")
        self.assertEqual(stored, {"user": "alice"})


class BackendTests(TLSTestCase):
    """``Emitter`` and ``Sessions`` from a URL."""

    @defer.inlineCallbacks
    def test_wrong_certificate_is_never_sent_a_command(self):
        for what, url, ca in self.wrong():
            sessions = Sessions.from_url(url, ca_file=ca, timeout=3)
            emitter = Emitter.from_url(url, ca_file=ca, timeout=3)
            self.addCleanup(sessions.redis.disconnect)
            self.addCleanup(emitter.redis.disconnect)
            pools = [sessions.redis.pool, emitter.redis.pool]
            stored = sessions.get("x")
            published = emitter.to("lobby").send("hi")
            yield eventually(lambda: all(c.attempts >= 2 for p in pools for c in p.connections),
                             what=f"the pools to fail twice ({what})")
            self.assertFalse(stored.called or published.called, what)
            # then the bounded wait gives up, saying why
            for d in (stored, published):
                failure = yield with_timeout(self.assertFailure(d, RedisUnavailable),
                                             what=f"the bounded wait ({what})")
                self.assertIn("within 3s: TLS: ", str(failure), what)

    @defer.inlineCallbacks
    def test_right_certificate_works(self):
        sessions = Sessions.from_url(self.redis.url, ca_file=self.ca.path)
        self.addCleanup(sessions.redis.disconnect)
        yield sessions.set("tok", {"user": "alice"})
        self.assertEqual((yield sessions.get("tok")), {"user": "alice"})
        emitter = Emitter.from_url(self.redis.url, ca_file=self.ca.path)
        self.addCleanup(emitter.redis.disconnect)
        self.assertEqual((yield emitter.to("lobby").send("hi")), 0)


class CommandLineTests(CliMixin, TLSTestCase):
    """``symple session`` and ``symple emit`` with ``--redis-ca``."""

    @defer.inlineCallbacks
    def test_wrong_certificate_is_a_clear_error_and_right_one_works(self):
        commands = (["session", "create", "cli-token", "--user", "alice"],
                    ["emit", "--to", "lobby", "--data", "1"])
        for what, url, ca in self.wrong():
            for args in commands:
                code, stdout, stderr = yield self.run_cli(*args, "--redis", url,
                                                          "--redis-ca", ca, "--timeout", "5")
                self.assertEqual(code, 1, (what, stderr))
                self.assertIn("symple: cannot connect to Redis at 127.0.0.1:", stderr)
                self.assertIn("TLS", stderr, what)
                self.assertEqual(stdout, [], what)
        for args in commands:
            code, _, stderr = yield self.run_cli(*args, "--redis", self.redis.url,
                                                 "--redis-ca", self.ca.path)
            self.assertEqual(code, 0, stderr)
        code, stdout, stderr = yield self.run_cli("session", "show", "cli-token", "--redis",
                                                  f"{self.redis.url}?ssl_ca_certs={self.ca.path}")
        self.assertEqual(code, 0, stderr)
        self.assertIn('"user":"alice"', "".join(stdout).replace(" ", ""))

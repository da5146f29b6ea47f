"""Listening endpoints get an accept queue fit for reconnect storms unless they choose one."""

from __future__ import annotations

import os
import socket
import struct
import tempfile

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from symple_tx import listen, tap
from symple_tx.config import Settings
from symple_tx.service import SympleServer


def accept_queue_limit(sock: socket.socket) -> int:
    """The backlog the kernel gives a listening socket (``tcpi_sacked`` of ``TCP_INFO``)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return struct.unpack_from("I", info, 28)[0]


class WithBacklogTests(unittest.TestCase):
    def test_tcp_and_ssl_without_a_backlog_get_the_systems(self):
        n = listen.system_backlog()
        self.assertEqual(listen.with_backlog("tcp:4500"), f"tcp:4500:backlog={n}")
        self.assertEqual(listen.with_backlog("tcp6:4500:interface=\\:\\:1"),
                         f"tcp6:4500:interface=\\:\\:1:backlog={n}")
        self.assertEqual(listen.with_backlog("ssl:4443:privateKey=k.pem:certKey=c.pem"),
                         f"ssl:4443:privateKey=k.pem:certKey=c.pem:backlog={n}")
        self.assertEqual(listen.with_backlog("TCP:4500", 77), "TCP:4500:backlog=77")

    def test_a_chosen_backlog_is_kept(self):
        for description in ("tcp:4500:backlog=10", "tcp:4500:interface=127.0.0.1:backlog=10",
                            "tcp:4500:127.0.0.1:10", "ssl:4443:k.pem:c.pem:m:127.0.0.1:10",
                            "ssl:4443:backlog=10:privateKey=k.pem"):
            self.assertEqual(listen.with_backlog(description, 4096), description)

    def test_other_endpoints_are_left_alone(self):
        for description in ("unix:/run/symple.sock", "systemd:domain=INET:index=0"):
            self.assertEqual(listen.with_backlog(description, 4096), description)

    def test_escaped_colons_stay_escaped(self):
        description = "ssl:4443:privateKey=C\\:/keys/k.pem:certKey=c.pem"
        self.assertEqual(listen.with_backlog(description, 9), description + ":backlog=9")

    def test_the_system_limit_is_read_from_somaxconn(self):
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("65535\n")
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(listen.system_backlog(f.name), 65535)

    def test_an_unreadable_limit_falls_back_to_4096(self):
        self.assertEqual(listen.system_backlog("/nonexistent/somaxconn"), 4096)
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("many")
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(listen.system_backlog(f.name), 4096)


class ListeningSocketTests(unittest.TestCase):
    """The backlog the kernel actually grants, on real listening sockets."""

    @defer.inlineCallbacks
    def listening(self, endpoint) -> defer.Deferred:
        port = yield endpoint.listen(Factory.forProtocol(Protocol))
        self.addCleanup(port.stopListening)
        return port.socket

    def expected(self) -> int:
        # The kernel caps a backlog at somaxconn, so asking for it grants it exactly.
        return listen.system_backlog()

    @defer.inlineCallbacks
    def test_the_servers_endpoints_listen_with_the_system_backlog(self):
        server = SympleServer(Settings())
        handle = yield self.listening(server.endpoint("tcp:0:interface=127.0.0.1"))
        self.assertEqual(accept_queue_limit(handle), self.expected())
        self.assertGreater(accept_queue_limit(handle), 50)  # Twisted's default

    @defer.inlineCallbacks
    def test_port_and_default_listen_of_twistd_symple(self):
        for argv in (["--port", "0"], []):
            options = tap.SympleOptions()
            options.parseOptions(argv)
            [endpoint] = options["endpoints"]
            if not argv:  # the default port may be taken: listen where it says, on port 0
                self.assertEqual(endpoint._port, tap.DEFAULT_PORT)
                endpoint._port = 0
            endpoint._interface = "127.0.0.1"
            handle = yield self.listening(endpoint)
            self.assertEqual(accept_queue_limit(handle), self.expected())

    @defer.inlineCallbacks
    def test_an_explicit_backlog_is_what_the_kernel_gets(self):
        server = SympleServer(Settings())
        handle = yield self.listening(
            server.endpoint("tcp:0:interface=127.0.0.1:backlog=64"))
        self.assertEqual(accept_queue_limit(handle), 64)



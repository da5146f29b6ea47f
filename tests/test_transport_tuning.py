"""Socket and Autobahn settings that decide latency and per-connection memory."""

import socket

from twisted.internet import defer

from tests.support import ServerTestCase


class TransportTuningTests(ServerTestCase):
    @defer.inlineCallbacks
    def test_server_connections_turn_nagle_off(self):
        """Small replies must not wait for the peer's delayed ACK (≈1 ms tail latency)."""
        peer = yield self.peer("alice")
        [link] = self.server.router.links
        handle = link.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        client_handle = peer.transport.getHandle()
        self.assertTrue(client_handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @defer.inlineCallbacks
    def test_options_are_shared_not_copied_per_connection(self):
        yield self.peer("alice")
        [link] = self.server.router.links
        self.assertNotIn("autoPingInterval", vars(link))
        self.assertEqual(link.autoPingInterval, self.server.settings.ping_interval)

    @defer.inlineCallbacks
    def test_options_set_later_reach_new_connections(self):
        self.server.websocket.setProtocolOptions(autoPingInterval=7)
        yield self.peer("alice")
        [link] = self.server.router.links
        self.assertEqual(link.autoPingInterval, 7)

    @defer.inlineCallbacks
    def test_an_idle_peer_holds_no_handshake_or_unused_parser_state(self):
        """Memory per idle connection: what only the handshake or unused options need is let go."""
        peer = yield self.peer("alice")
        [link] = self.server.router.links
        for name in ("http_request_data", "http_headers", "http_response_data"):
            self.assertIsNone(getattr(link, name), name)
        self.assertEqual(link.send_queue, ())
        self.assertIsNone(link.utf8validator)
        yield peer.round_trip()  # and it still works

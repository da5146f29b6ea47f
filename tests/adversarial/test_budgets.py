"""Per-address budgets: one host cannot take every connection slot.

Row: 200 sockets that connect and say nothing took every connection slot until
the auth timeout; there was no per-address cap.  Connections come from
127.0.0.1 (the attacker) and 127.0.0.2 (a bystander): Linux routes all of
127/8 to loopback, and the tests exempt no network.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from symple_tx.config import Settings
from tests.adversarial.support import HANDSHAKE, UPGRADE, RawTestCase
from tests.support import eventually, with_timeout



class TwoHundredSilentSocketsTests(RawTestCase):
    """The row as found: 200 sockets of one host that say nothing, default budgets."""

    settings = Settings(max_connections=150, budget_exempt=(), auth_timeout=30)

    @defer.inlineCallbacks
    def test_two_hundred_silent_sockets_leave_room_for_others(self):
        clients = []
        for _ in range(200):
            client = yield self.raw(HANDSHAKE)
            clients.append(client)
        for client in clients:
            yield with_timeout(client.until(b"\r\n\r\n"), what="a handshake answer")
        statuses = [client.status for client in clients]
        limit = Settings().max_unauthenticated_per_address
        self.assertEqual((statuses.count(101), statuses.count(429)), (limit, 200 - limit))
        bystander = yield self.peer_from("127.0.0.2", "bystander")
        self.assertEqual(bystander.welcome["type"], "welcome")


class SilentSocketsTests(RawTestCase):
    settings = Settings(max_connections=60, max_unauthenticated_per_address=20,
                        budget_exempt=(), auth_timeout=30)

    @defer.inlineCallbacks
    def test_silent_websockets_of_one_address_cannot_fill_the_server(self):
        clients = yield self.open_handshakes(60)
        statuses = [client.status for client in clients]
        self.assertEqual(statuses.count(101), 20, statuses)
        self.assertEqual(statuses.count(429), 40, statuses)
        self.assertIn(b"Too many unauthenticated connections", clients[-1].received)
        bystander = yield self.peer_from("127.0.0.2", "bystander")
        self.assertEqual(bystander.welcome["type"], "welcome")
        self.assertEqual(self.sample("symple_disconnects_total", reason="address_budget"), 40)

    @defer.inlineCallbacks
    def test_silent_sockets_count_before_their_head(self):
        clients = []
        for _ in range(25):
            client = yield self.raw()
            clients.append(client)
        for client in clients[20:]:
            yield with_timeout(client.lost, what="429 for a socket over the budget")
            self.assertEqual(client.status, 429)
        self.assertFalse(any(client.lost.called for client in clients[:20]))

    @defer.inlineCallbacks
    def test_authenticating_frees_the_slot(self):
        peers = []
        for n in range(20):
            peer = yield self.peer_from("127.0.0.1", f"user{n}")
            peers.append(peer)
        clients = yield self.open_handshakes(20)
        self.assertEqual([c.status for c in clients].count(101), 20)
        [extra] = yield self.open_handshakes(1)
        self.assertEqual(extra.status, 429)
        clients[0].transport.loseConnection()
        yield clients[0].lost
        yield with_timeout(self._slots_below(20), what="the slot to free")
        [again] = yield self.open_handshakes(1)
        self.assertEqual(again.status, 101)

    @defer.inlineCallbacks
    def _slots_below(self, n: int):
        budgets = self.server.port_factory.budgets
        while budgets.unauthenticated.get("127.0.0.1", 0) >= n:
            yield deferLater(reactor, 0.02, lambda: None)


class AnonymousAuthTests(RawTestCase):
    """Anonymous auth is free: the cap on all of an address's connections still holds."""

    settings = Settings(max_connections_per_address=5, budget_exempt=())

    @defer.inlineCallbacks
    def test_authenticating_does_not_escape_the_address_cap(self):
        peers = []
        for n in range(5):
            peer = yield self.peer_from("127.0.0.1", f"user{n}")
            peers.append(peer)
        [extra] = yield self.open_handshakes(1)
        self.assertEqual(extra.status, 429)
        self.assertIn(b"Too many connections from this address", extra.received)
        bystander = yield self.peer_from("127.0.0.2", "bystander")
        self.assertEqual(bystander.welcome["type"], "welcome")
        peers[0].transport.loseConnection()
        yield peers[0].wait_closed()
        budgets = self.server.port_factory.budgets
        yield eventually(lambda: budgets.connections.get("127.0.0.1", 0) < 5,
                         what="the closed connection to free its place")
        again = yield self.peer_from("127.0.0.1", "again")
        self.assertEqual(again.welcome["type"], "welcome")


class RateTests(RawTestCase):
    settings = Settings(address_connection_rate=10, budget_exempt=())

    @defer.inlineCallbacks
    def test_reconnecting_in_a_loop_is_refused_past_the_rate(self):
        statuses = []
        for _ in range(15):
            client = yield self.raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                    b"Connection: close\r\n\r\n")
            yield with_timeout(client.lost, what="an answer")
            statuses.append(client.status)
        self.assertEqual(statuses, [200] * 10 + [429] * 5)
        bystander = yield self.peer_from("127.0.0.2", "bystander")
        self.assertEqual(bystander.welcome["type"], "welcome")


class ProxyTests(RawTestCase):
    """Behind a trusted proxy the forwarded address is what is counted."""

    settings = Settings(trust_proxy=True, max_unauthenticated_per_address=3)

    @defer.inlineCallbacks
    def test_the_forwarded_address_is_budgeted(self):
        def head(address: bytes) -> bytes:
            return UPGRADE + b"X-Forwarded-For: " + address + b"\r\n\r\n"
        statuses = []
        for _ in range(5):
            client = yield self.raw(head(b"203.0.113.7"))
            yield with_timeout(client.until(b"\r\n\r\n"), what="a handshake answer")
            statuses.append(client.status)
        self.assertEqual(statuses, [101] * 3 + [429] * 2)
        other = yield self.raw(head(b"203.0.113.8"))
        yield with_timeout(other.until(b"\r\n\r\n"), what="a handshake answer")
        self.assertEqual(other.status, 101)

    @defer.inlineCallbacks
    def test_a_client_cannot_choose_its_address_behind_an_appending_proxy(self):
        # nginx's $proxy_add_x_forwarded_for keeps what the client sent and appends the
        # address it saw; some proxies add a header line of their own instead.
        heads = [UPGRADE + b"X-Forwarded-For: 198.51.100.%d, 203.0.113.7\r\n\r\n" % i
                 for i in range(3)]
        heads += [UPGRADE + b"X-Forwarded-For: 198.51.100.%d\r\n"
                  b"X-Forwarded-For: 203.0.113.7\r\n\r\n" % i for i in range(3, 5)]
        statuses = []
        for head in heads:
            client = yield self.raw(head)
            yield with_timeout(client.until(b"\r\n\r\n"), what="a handshake answer")
            statuses.append(client.status)
        self.assertEqual(statuses, [101] * 3 + [429] * 2)


class DefaultExemptionTests(RawTestCase):
    settings = Settings(max_unauthenticated_per_address=2)

    @defer.inlineCallbacks
    def test_loopback_is_exempt_by_default(self):
        for _ in range(4):
            client = yield self.raw(HANDSHAKE)
            yield with_timeout(client.until(b"\r\n\r\n"), what="a handshake answer")
            self.assertEqual(client.status, 101)

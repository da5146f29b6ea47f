"""Which address a client is counted as, with and without trusted proxies."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.trial import unittest

from symple_tx.proxyaddress import LOCAL, client_host

PEER = IPv4Address("TCP", "10.0.0.1", 40000)


class ClientHostTests(unittest.TestCase):
    def test_headers_are_ignored_unless_the_proxy_is_trusted(self):
        headers = {"x-forwarded-for": "203.0.113.9", "x-real-ip": "203.0.113.10"}
        self.assertEqual(client_host(headers, PEER, False), "10.0.0.1")

    def test_the_entry_the_nearest_proxy_added_counts(self):
        headers = {"x-forwarded-for": "198.51.100.1, 203.0.113.9"}
        self.assertEqual(client_host(headers, PEER, True), "203.0.113.9")

    def test_with_more_proxies_the_address_the_outermost_saw_counts(self):
        headers = {"x-forwarded-for": "198.51.100.1, 203.0.113.9, 10.0.0.7"}
        self.assertEqual(client_host(headers, PEER, True, hops=2), "203.0.113.9")

    def test_a_list_shorter_than_the_hops_is_not_believed(self):
        headers = {"x-forwarded-for": "203.0.113.9"}
        self.assertEqual(client_host(headers, PEER, True, hops=2), "10.0.0.1")

    def test_what_is_not_an_address_is_not_believed(self):
        for value in ("unknown", "", "203.0.113.9, evil", "1.2.3.4.5"):
            self.assertEqual(client_host({"x-forwarded-for": value}, PEER, True),
                             "10.0.0.1", value)
        self.assertEqual(client_host({"x-real-ip": "nope"}, PEER, True), "10.0.0.1")

    def test_ports_and_brackets_are_taken_off_and_addresses_normalised(self):
        cases = {"203.0.113.9:5555": "203.0.113.9", "[2001:DB8::1]:443": "2001:db8::1",
                 "2001:DB8:0::1": "2001:db8::1", " 203.0.113.9 ": "203.0.113.9"}
        for value, expected in cases.items():
            self.assertEqual(client_host({"x-forwarded-for": value}, PEER, True), expected)

    def test_x_real_ip_counts_only_without_x_forwarded_for(self):
        self.assertEqual(client_host({"x-real-ip": "203.0.113.10"}, PEER, True),
                         "203.0.113.10")
        headers = {"x-real-ip": "203.0.113.10", "x-forwarded-for": "203.0.113.9"}
        self.assertEqual(client_host(headers, PEER, True), "203.0.113.9")

    def test_a_unix_socket_peer_is_local(self):
        self.assertEqual(client_host({}, UNIXAddress(None), True), LOCAL)

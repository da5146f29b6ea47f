"""Per-address connection budgets without sockets (symple_tx.budgets)."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from symple_tx.budgets import AddressBudgets, Refused, address_key, parse_networks


class BudgetUnitTests(unittest.TestCase):
    def test_ipv6_hosts_count_by_their_64(self):
        self.assertEqual(address_key("2001:db8:1:2::5"), address_key("2001:db8:1:2:ffff::1"))
        self.assertNotEqual(address_key("2001:db8:1:2::5"), address_key("2001:db8:1:3::5"))
        self.assertEqual(address_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_key("192.0.2.1"), "192.0.2.1")

    def test_idle_addresses_are_forgotten(self):
        clock = Clock()
        budgets = AddressBudgets(0, 5, (), clock.seconds)
        for n in range(1000):
            budgets.admit(f"10.0.{n // 256}.{n % 256}").close()
        self.assertEqual(len(budgets.buckets), 1000)
        self.assertEqual((budgets.unauthenticated, budgets.connections), ({}, {}))
        clock.advance(11)
        budgets.admit("10.9.9.9").close()
        self.assertEqual(list(budgets.buckets), ["10.9.9.9"])

    def test_a_refused_connection_holds_nothing(self):
        budgets = AddressBudgets(2, 0, (), Clock().seconds)
        tickets = [budgets.admit("192.0.2.1"), budgets.admit("192.0.2.1")]
        self.assertRaises(Refused, budgets.admit, "192.0.2.1")
        tickets[0].release()
        tickets[0].release()  # idempotent
        self.assertEqual(budgets.unauthenticated, {"192.0.2.1": 1})
        budgets.admit("192.0.2.1")

    def test_exempt_networks_are_not_counted(self):
        budgets = AddressBudgets(1, 1, ("10.0.0.0/8", "::1"), Clock().seconds)
        for _ in range(5):
            budgets.admit("10.1.2.3")
            budgets.admit("::1")
        self.assertEqual(budgets.unauthenticated, {})
        budgets.admit("192.0.2.1")
        self.assertRaises(Refused, budgets.admit, "192.0.2.1")

    def test_the_rate_refuses_then_refills(self):
        clock = Clock()
        budgets = AddressBudgets(0, 3, (), clock.seconds)
        for _ in range(3):
            budgets.admit("192.0.2.1").close()
        with self.assertRaisesRegex(Refused, "3 per 10 s"):
            budgets.admit("192.0.2.1")
        clock.advance(10 / 3)
        budgets.admit("192.0.2.1")

    def test_budgets_off(self):
        budgets = AddressBudgets(0, 0, (), Clock().seconds)
        for _ in range(1000):
            budgets.admit("192.0.2.1")
        self.assertEqual((budgets.unauthenticated, budgets.buckets), ({}, {}))

    def test_networks_are_checked(self):
        self.assertEqual(len(parse_networks(["127.0.0.0/8", "::1", "10.1.2.3"])), 3)
        self.assertRaisesRegex(ValueError, "'nope'", parse_networks, ["nope"])

    def test_authenticated_connections_count_against_the_address_cap(self):
        budgets = AddressBudgets(2, 0, (), Clock().seconds, max_connections=3)
        tickets = [budgets.admit("192.0.2.1") for _ in range(2)]
        for ticket in tickets:
            ticket.release()  # authenticated: no longer unauthenticated, still open
        budgets.admit("192.0.2.1")
        with self.assertRaisesRegex(Refused, "Too many connections .* 3"):
            budgets.admit("192.0.2.1")
        tickets[0].close()
        tickets[0].close()  # idempotent
        budgets.admit("192.0.2.1")
        self.assertEqual(budgets.connections, {"192.0.2.1": 3})

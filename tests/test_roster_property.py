"""Property: rosters kept the way symple-client 4.x keeps them always equal what
each session sees, and every routed frame reaches exactly its eligible
recipients, once each (docs/spec.md §4, §5 and §13).  The model and the
state machine are in tests/roster_model.py.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test
from twisted.trial import unittest

from tests.roster_model import RosterMachine


class RosterPropertyTests(unittest.TestCase):
    def test_rosters_and_delivery(self):
        run_state_machine_as_test(RosterMachine, settings=settings(
            max_examples=150, stateful_step_count=30, deadline=None,
            suppress_health_check=[HealthCheck.too_slow]))

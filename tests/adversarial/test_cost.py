"""What one client can cost a real server process (docs/operations.md).

A ``twistd symple`` child with its defaults; each probe is one client on one
connection, run to its bound; the server's peak RSS over its idle figure
(/proc/<pid>/status VmHWM, reset through clear_refs) must stay within the
worst case per connection that docs/operations.md computes from the defaults.
The four attackers' effect on a bystander's round trips is measured by
``bench/attack.py`` and recorded in the same section: a timing on a shared
two-core CI machine is no assertion.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.adversarial import attacks
from tests.support import free_port, spawn_twistd, wait_serving

HOST = "127.0.0.1"
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_worst_case() -> int:
    """The figure docs/operations.md gives, in bytes."""
    text = OPERATIONS.read_text()
    match = re.search(r"worst case per connection at the defaults: \*\*([\d.]+) MiB\*\*", text)
    assert match, "docs/operations.md no longer states the worst case per connection"
    return int(float(match.group(1)) * 1024 * 1024)


def wait_idle(pid: int, quiet: float = 0.2, timeout: float = 10.0) -> None:
    """Until the server has used no CPU for ``quiet`` seconds (blocking: run in a thread)."""
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu() -> int:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    deadline = time.monotonic() + timeout
    last = cpu()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu()
        if now - last < 1.5 * ticks * 0.01:
            return
        last = now


class OneClientCostTests(unittest.TestCase):
    """Each probe of the issue's table, alone, against a server with default settings."""

    @defer.inlineCallbacks
    def setUp(self):
        if not os.path.exists("/proc/self/clear_refs"):
            raise unittest.SkipTest("needs Linux /proc")
        self.port = free_port()
        self.process = spawn_twistd(self, ["symple", "--listen",
                                           f"tcp:{self.port}:interface={HOST}"])
        yield wait_serving(self.process, self.port)
        self.pid = self.process.transport.pid
        self.worst = documented_worst_case()
        # Warm up every code path once, so first-use allocations are not counted.
        yield threads.deferToThread(self._warm_up)

    def _warm_up(self) -> None:
        attacks.pings_unread(HOST, self.port, 256 << 10, 0.5)
        attacks.endless_head(HOST, self.port, 64 << 10, 0.5)
        attacks.big_body(HOST, self.port, 64 << 10, 0.5)
        sock, _ = attacks.max_holdings(HOST, self.port, 100, 8192, user="warm")
        sock.close()

    def peak_growth(self, probe) -> int:
        """Server RSS peak over its idle figure while ``probe`` runs (blocking)."""
        wait_idle(self.pid)
        base = attacks.rss_bytes(self.pid)
        attacks.reset_peak_rss(self.pid)
        probe()
        wait_idle(self.pid)
        return attacks.peak_rss_bytes(self.pid) - base

    @defer.inlineCallbacks
    def check(self, probe):
        growth = yield threads.deferToThread(self.peak_growth, probe)
        self.assertLessEqual(growth, self.worst,
                             f"+{growth / 1048576:.2f} MiB for one client, documented "
                             f"worst case {self.worst / 1048576:.2f} MiB")
        return growth

    def test_pings_never_read_before_auth(self):
        """Once 151 MB of pings raised RSS by 182 MiB: the server now stops reading."""
        def probe():
            outcome = attacks.pings_unread(HOST, self.port, 64 << 20, 2.0)
            self.assertLess(outcome.sent, 64 << 20, "the server read every ping")
        return self.check(probe)

    def test_pings_never_read_after_auth(self):
        def probe():
            outcome = attacks.pings_unread(HOST, self.port, 64 << 20, 2.0, authenticate=True)
            self.assertLess(outcome.sent, 64 << 20, "the server read every ping")
        return self.check(probe)

    def test_endless_head(self):
        def probe():
            outcome = attacks.endless_head(HOST, self.port, 16 << 20, 2.0)
            self.assertTrue(outcome.closed_by_server or outcome.status == 431)
        return self.check(probe)

    def test_large_body(self):
        def probe():
            outcome = attacks.big_body(HOST, self.port, 32 << 20, 2.0)
            self.assertLess(outcome.sent, 32 << 20, "the server read the whole body")
        return self.check(probe)

    def test_most_rooms_and_presence(self):
        def probe():
            sock, outcome = attacks.max_holdings(HOST, self.port, 100, 8192)
            try:
                self.assertTrue(outcome.notes["welcomed"])
                wait_idle(self.pid)
            finally:
                sock.close()
        return self.check(probe)

"""Counters: plain numbers exported under the same Prometheus names and labels."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from symple_tx.metrics import Count, Metrics


def families(text: bytes) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


class CounterTests(unittest.TestCase):
    def test_increments_are_scraped_by_name_and_label(self):
        metrics = Metrics()
        metrics.frames_in["auth"].inc()
        metrics.frames_in["auth"].inc()
        metrics.drops["rate_limit"].inc(3)
        sample = metrics.registry.get_sample_value
        self.assertEqual(sample("symple_frames_in_total", {"type": "auth"}), 2)
        self.assertEqual(sample("symple_drops_total", {"reason": "rate_limit"}), 3)
        self.assertIsNone(sample("symple_drops_total", {"reason": "invalid"}))

    def test_names_types_and_help_are_those_of_prometheus_counters(self):
        """Dashboards keep working: the exposition matches prometheus-client's own Counter."""
        metrics = Metrics()
        metrics.disconnects["slow_consumer"].inc()
        ours = families(metrics.render())
        reference = Counter("symple_disconnects", "Server-initiated disconnects, by reason",
                            ["reason"], registry=None)
        reference.labels("slow_consumer").inc()
        [theirs] = reference.collect()
        mine = ours["symple_disconnects"]
        self.assertEqual((mine.type, mine.documentation), (theirs.type, theirs.documentation))
        totals = [(s.name, s.labels, s.value) for s in theirs.samples if s.name.endswith("_total")]
        self.assertEqual([(s.name, s.labels, s.value) for s in mine.samples], totals)
        for name in ("symple_frames_in", "symple_frames_out", "symple_drops",
                     "symple_auth_failures", "symple_disconnects"):
            self.assertEqual(ours[name].type, "counter", name)

    def test_each_server_has_its_own_counters(self):
        one, two = Metrics(), Metrics()
        one.frames_out["message"].inc()
        self.assertIsNone(two.registry.get_sample_value("symple_frames_out_total",
                                                        {"type": "message"}))

    def test_a_count_is_a_plain_number(self):
        count = Count()
        count.inc()
        count.inc(2.5)
        self.assertEqual(count.value, 3.5)
        self.assertFalse(hasattr(count, "_lock"))

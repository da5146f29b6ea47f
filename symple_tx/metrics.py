"""Prometheus metrics, one registry per server so embedded and test servers never clash."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Count:
    """One counter's value: a plain number, added to without a lock.

    prometheus-client's ``Counter.inc`` takes a lock on every call (about 1 %
    of a routed frame's CPU).  Every increment here happens in the reactor
    thread, and so does every scrape, so nothing needs one.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class LabelledCounter(dict):
    """A counter family with one label: ``counter[value].inc()``; read when scraped."""

    def __init__(self, name: str, documentation: str, label: str,
                 registry: CollectorRegistry) -> None:
        super().__init__()
        self.name = name
        self.documentation = documentation
        self.label = label
        registry.register(self)

    # The registry keeps its collectors in a dict: identity, not contents.
    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__

    def __missing__(self, key: str) -> Count:
        child = self[key] = Count()
        return child

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> list[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for key, count in list(self.items()):
            family.add_metric([key], count.value)
        return [family]


class Metrics:
    """The counters the router and transports update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("symple_connections", "Open WebSocket connections", registry=r)
        self.peers = Gauge("symple_peers", "Authenticated sessions on this process", registry=r)
        self.rooms = Gauge("symple_rooms", "Rooms with at least one local member", registry=r)
        self.frames_in = LabelledCounter(
            "symple_frames_in", "Frames received from peers, by type", "type", r)
        self.frames_out = LabelledCounter(
            "symple_frames_out", "Frames delivered to peers, by type", "type", r)
        self.drops = LabelledCounter(
            "symple_drops", "Frames not delivered, by reason", "reason", r)
        self.auth_failures = LabelledCounter(
            "symple_auth_failures", "Refused authentications, by status", "status", r)
        self.disconnects = LabelledCounter(
            "symple_disconnects", "Server-initiated disconnects, by reason", "reason", r)

    def track(self, connections: Callable[[], float], peers: Callable[[], float],
              rooms: Callable[[], float]) -> None:
        """Read the gauges from live state at scrape time instead of updating them."""
        self.connections.set_function(connections)
        self.peers.set_function(peers)
        self.rooms.set_function(rooms)

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""Prometheus metrics, one registry per server so embedded and test servers never clash."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class _LabelCache(dict):
    """Label children cached by value: a dict lookup on the hot path instead of
    prometheus-client's lock-protected ``labels()`` call."""

    def __init__(self, counter: Counter) -> None:
        super().__init__()
        self._counter = counter

    def __missing__(self, key: str):
        child = self[key] = self._counter.labels(key)
        return child


class Metrics:
    """The counters the router and transports update."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("symple_connections", "Open WebSocket connections", registry=r)
        self.peers = Gauge("symple_peers", "Authenticated sessions on this process", registry=r)
        self.rooms = Gauge("symple_rooms", "Rooms with at least one local member", registry=r)
        self.frames_in = _LabelCache(Counter(
            "symple_frames_in", "Frames received from peers, by type", ["type"], registry=r))
        self.frames_out = _LabelCache(Counter(
            "symple_frames_out", "Frames delivered to peers, by type", ["type"], registry=r))
        self.drops = _LabelCache(Counter(
            "symple_drops", "Frames not delivered, by reason", ["reason"], registry=r))
        self.auth_failures = _LabelCache(Counter(
            "symple_auth_failures", "Refused authentications, by status", ["status"], registry=r))
        self.disconnects = _LabelCache(Counter(
            "symple_disconnects", "Server-initiated disconnects, by reason", ["reason"], registry=r))

    def track(self, connections: Callable[[], float], peers: Callable[[], float],
              rooms: Callable[[], float]) -> None:
        """Read the gauges from live state at scrape time instead of updating them."""
        self.connections.set_function(connections)
        self.peers.set_function(peers)
        self.rooms.set_function(rooms)

    def render(self) -> bytes:
        return generate_latest(self.registry)

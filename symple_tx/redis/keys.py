"""Key and channel names: spelled here and nowhere else.

The layout under the default prefix ``symple:`` is the Ruby gem's, so Ruby
and Python backends share one server:

* ``symple:session:<token>`` — a stored session (JSON), read at auth;
* ``symple:broadcast`` — frames backends publish for every server process;
* ``symple:cluster:`` — the cluster's own channels (under ``v2:``, the bus
  protocol's version) and keys (its prefix can be set apart, so processes on
  one Redis may form separate clusters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DEFAULT_PREFIX = "symple:"
#: The cluster bus's protocol, part of each of its channel names: processes
#: that speak different ones form separate clusters on one Redis instead of
#: half-understanding each other (docs/clustering.md, "Upgrading").
BUS_VERSION = "v2"


@dataclass(frozen=True)
class Keys:
    """The names under one key prefix (and, optionally, a cluster prefix of its own)."""

    prefix: str = DEFAULT_PREFIX
    cluster_prefix: Optional[str] = None

    @property
    def session_prefix(self) -> str:
        return self.prefix + "session:"

    def session(self, token: str) -> str:
        """The key of the stored session for ``token``."""
        return self.session_prefix + token

    @property
    def broadcast(self) -> str:
        """The channel backends publish frames on (``Emitter``, the Ruby gem)."""
        return self.prefix + "broadcast"

    @property
    def cluster(self) -> str:
        """The prefix of everything the cluster bus names."""
        if self.cluster_prefix is not None:
            return self.cluster_prefix
        return self.prefix + "cluster:"

    @property
    def bus(self) -> str:
        """The prefix of the bus's channels: the cluster's, and the protocol's version."""
        return self.cluster + BUS_VERSION + ":"

    @property
    def control(self) -> str:
        """Every process: heartbeats, full-state syncs, goodbyes."""
        return self.bus + "control"

    def node(self, node_id: str) -> str:
        """One process: deliveries for its sessions, states and room members for it."""
        return self.bus + "node:" + node_id

    def room(self, name: str) -> str:
        """The processes with a session in named room ``name``: its members' changes."""
        return self.bus + "room:" + name

    def user(self, name: str) -> str:
        """The processes with a session of user ``name`` (its user room): their changes."""
        return self.bus + "user:" + name

    def alive(self, node_id: str) -> str:
        """A key refreshed with each heartbeat and expiring with the node timeout."""
        return self.cluster + "alive:" + node_id

"""Routing and presence across processes, with in-process servers sharing a real Redis."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.cluster_support import (InProcessCluster, PeersMixin, RedisServer, eventually,
                                   require_redis_server)


class ClusterRoutingTests(PeersMixin, unittest.TestCase):
    nodes = 3

    @defer.inlineCallbacks
    def setUp(self):
        require_redis_server(self)
        self.redis = RedisServer()
        self.addCleanup(self.redis.cleanup)
        yield self.redis.start()
        self.cluster = InProcessCluster(self.redis.url, self.nodes)
        self.addCleanup(self.cluster.stop)
        yield self.cluster.start()
        yield eventually(lambda: self.cluster.nodes_known(self.nodes), what="nodes to meet")

    def port(self, index: int) -> int:
        return self.cluster.ports[index]

    @defer.inlineCallbacks
    def test_message_crosses_processes(self):
        alice = yield self.peer_on(self.port(0), "alice", rooms=["lobby"])
        bob = yield self.peer_on(self.port(1), "bob", rooms=["lobby"])
        online = yield alice.expect("presence")
        self.assertEqual(online["data"]["user"], "bob")
        snapshot = yield bob.expect("presence")
        self.assertEqual(snapshot["data"]["user"], "alice")
        alice.send_json({"type": "message", "data": "hi"})
        message = yield bob.expect("message")
        self.assertEqual(message["from"], alice.address)
